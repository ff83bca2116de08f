"""Register: an MLflow run with the model, its metrics and its full data lineage.

Logs params, metrics, the snapshot as an MLflow dataset input (with Finegate's own digest of the
whole snapshot, not MLflow's first-10,000-rows one), the scorecard, gate and evaluation reports,
and lineage tags (snapshot digest, drops, sources, code version, Prefect flow run). The model is
registered with a model card; ``tasks/promote.py`` names it ``challenger`` and decides whether
it becomes ``champion``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow.parquet as pq
from prefect import task

from finegate.config import PROJECT_ROOT, Config
from finegate.lake import Lake, read_json
from tasks.evaluate import EvaluationResult
from tasks.finetune import FinetuneResult, training_digest
from tasks.snapshot import SnapshotResult

SNAPSHOT_TAG = "finegate.snapshot_digest"
TRAINING_TAG = "finegate.training_digest"  # the training settings (tasks/finetune.py)
EVALUATION_TAG = "finegate.evaluation_report"
PROMOTION_TAG = "finegate.promotion"  # set by tasks/promote.py once the decision is made


@dataclass(frozen=True)
class RegisterResult:
    """The MLflow run and registered model version."""

    tracking_uri: str
    run_id: str
    model_name: str
    version: str
    aliases: list[str]
    evaluation_report: str | None = None  # the evaluation.json this version was judged on
    decided: bool = True  # False: a run stopped before the champion/challenger decision


def code_version(root: Path = PROJECT_ROOT) -> str:
    """The git commit of the code (``+dirty`` with local changes), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def mlflow_uri(config: Config) -> str:
    """The tracking URI to hand to MLflow, without credentials.

    MLflow prints its URI in logs ("View run at ..."), so credentials written in the configured
    URI move to MLflow's variables of this process instead: ``https://user:password@host`` to
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, ``https://token@host`` to
    ``MLFLOW_TRACKING_TOKEN``.
    """
    parts = urlsplit(config.tracking_uri())
    if not (parts.username or parts.password):
        return config.tracking_uri()
    if parts.password is None:
        os.environ["MLFLOW_TRACKING_TOKEN"] = unquote(parts.username)
    else:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username or "")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port
                                                               else "")))


def ensure_experiment(config: Config) -> str:
    """The experiment id; with the default SQLite store its artifacts live inside the lake."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(config.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not config.mlflow_tracking_uri.get_secret_value():
        location = (Lake.at(config.lake_path).root / "mlartifacts").as_uri()
    return mlflow.create_experiment(config.mlflow_experiment, artifact_location=location)


def log_snapshot_input(snapshot: SnapshotResult) -> None:
    """Log the snapshot as the run's training dataset, named and digested by Finegate."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    frame = pq.read_table(snapshot.data_path, columns=["id", "label", "split", "drop"]).to_pandas()
    dataset = from_pandas(frame, source=snapshot.data_path, name=f"snapshot-{snapshot.digest[:16]}",
                          digest=snapshot.digest[:32])
    mlflow.log_input(dataset, context="training",
                     tags={"finegate.snapshot_digest": snapshot.digest})


def model_card(config: Config, snapshot: SnapshotResult, scorecard: dict[str, Any],
               gate: dict[str, Any], trained: FinetuneResult,
               evaluation: EvaluationResult) -> str:
    """A Markdown model card: data, quality, gate, metrics, training, hardware, time."""
    import platform

    import torch

    hardware = (torch.cuda.get_device_name(0) if trained.device == "cuda"
                else f"CPU ({platform.processor() or platform.machine()}, "
                     f"{torch.get_num_threads()} threads)")
    golden = (f"- golden set: macro-F1 {evaluation.golden_macro_f1:.3f} on "
              f"{evaluation.golden_rows} rows\n" if evaluation.golden_rows else "")
    params = "\n".join(f"- {k}: {v}" for k, v in trained.params.items())
    warnings = "".join(f"\n  - {w}" for w in gate.get("warnings", []))
    return f"""# {config.model_name}

Sequence classifier over {", ".join(config.labels)}, fine-tuned by Finegate.

## Data
- snapshot `{snapshot.digest}` ({snapshot.rows} rows, drops {", ".join(snapshot.drops)})
- class balance {scorecard["class_balance"]:.3f}
- duplicate ratio {scorecard["duplicate_ratio"]:.3f}, noise ratio {scorecard["noise_ratio"]:.3f}
- quarantine ratio {scorecard["quarantine_ratio"]:.3f}

## Quality gate
- passed with {len(gate.get("warnings", []))} warning(s){warnings}

## Metrics
- test split: accuracy {evaluation.accuracy:.3f}, macro-F1 {evaluation.macro_f1:.3f} on
  {evaluation.test_rows} rows
{golden}
## Training
{params}
- hardware: {hardware}; {trained.seconds:.0f} s, {trained.samples_per_second:.1f} samples/s
- registered: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}
- code version: {code_version()}
"""


def register_model(config: Config, snapshot: SnapshotResult, quality_path: str, gate_path: str,
                   trained: FinetuneResult, evaluation: EvaluationResult,
                   flow_run_id: str, run_name: str) -> RegisterResult:
    """Log the run with lineage, register the model and set its aliases."""
    import mlflow
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # A retry after a partial failure must not register the same snapshot twice.
    existing = find_registered(config, snapshot.digest)
    if existing is not None:
        return existing
    mlflow.set_tracking_uri(mlflow_uri(config))
    experiment_id = ensure_experiment(config)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({f"train.{k}": v for k, v in trained.params.items()})
        mlflow.log_params({"split.train": config.split.train,
                           "split.validation": config.split.validation,
                           "split.test": config.split.test, "labels": ",".join(config.labels)})
        if evaluation.golden_rows:
            mlflow.log_metric("golden_macro_f1", evaluation.golden_macro_f1)
        mlflow.log_metrics({"test_accuracy": evaluation.accuracy,
                            "test_macro_f1": evaluation.macro_f1,
                            "train_loss": trained.train_loss, "train_seconds": trained.seconds,
                            "train_rows": trained.train_rows, "test_rows": evaluation.test_rows})
        scorecard = read_json(Path(quality_path))
        mlflow.log_metrics({f"quality.{k}": float(v) for k, v in scorecard.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.set_tags({
            "finegate.snapshot_digest": snapshot.digest, "finegate.snapshot_path": snapshot.path,
            "finegate.drops": ",".join(snapshot.drops), "finegate.landing": config.landing_path,
            "finegate.code_version": code_version(), "finegate.flow_run_id": flow_run_id,
        })
        log_snapshot_input(snapshot)
        card = model_card(config, snapshot, scorecard, read_json(Path(gate_path)), trained,
                          evaluation)
        mlflow.log_text(card, "model_card.md")
        run_dir = Path(evaluation.report_path).parent
        for png in sorted(run_dir.glob("confusion_*.png")):
            mlflow.log_artifact(str(png), artifact_path="evaluation")
        for path in (quality_path, gate_path, evaluation.report_path,
                     str(Path(snapshot.path) / "manifest.json")):
            mlflow.log_artifact(path, artifact_path="quality")
        data_docs = Path(gate_path).parent / "data_docs"
        if data_docs.is_dir():
            mlflow.log_artifacts(str(data_docs), artifact_path="data_docs")
        info = mlflow.transformers.log_model(
            transformers_model={
                "model": AutoModelForSequenceClassification.from_pretrained(trained.model_dir),
                "tokenizer": AutoTokenizer.from_pretrained(trained.model_dir),
            },
            name="model", task="text-classification",
            # Without explicit requirements MLflow infers torchvision, which is not installed.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"transformers=={transformers.__version__}"],
        )
    # The version is created with its lineage tags in one call, so it is never found untagged.
    version = str(mlflow.register_model(info.model_uri, config.model_name, tags={
        SNAPSHOT_TAG: snapshot.digest, TRAINING_TAG: training_digest(config.train),
        EVALUATION_TAG: evaluation.report_path}).version)
    mlflow.MlflowClient().update_model_version(config.model_name, version, description=card)
    return RegisterResult(tracking_uri=config.public_tracking_uri(), run_id=run.info.run_id,
                          model_name=config.model_name, version=version, aliases=[],
                          evaluation_report=evaluation.report_path, decided=False)


def find_registered(config: Config, digest: str) -> RegisterResult | None:
    """The model version already trained on the snapshot ``digest`` with these training
    settings, if there is one (changed settings train a new version on the same data)."""
    from mlflow import MlflowClient

    uri = mlflow_uri(config)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # An unreachable registry raises: "not found" must never be guessed (it would retrain).
    versions = client.search_model_versions(f"name='{config.model_name}'")
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if (version.tags.get(SNAPSHOT_TAG), version.tags.get(TRAINING_TAG)) == (
                digest, training_digest(config.train)):
            # search results do not carry aliases: read the version itself
            found = client.get_model_version(config.model_name, version.version)
            return RegisterResult(tracking_uri=config.public_tracking_uri(), run_id=found.run_id,
                                  model_name=config.model_name, version=str(found.version),
                                  aliases=sorted(found.aliases),
                                  evaluation_report=found.tags.get(EVALUATION_TAG),
                                  decided=PROMOTION_TAG in found.tags)
    return None


@task(name="find-trained-model", retries=2, retry_delay_seconds=2)
def registered_for(config: Config, digest: str) -> RegisterResult | None:
    """Prefect task: an unchanged snapshot needs no retraining; find its model version."""
    return find_registered(config, digest)


@task(name="register", retries=2, retry_delay_seconds=2)
def register(config: Config, snapshot: SnapshotResult, quality_path: str, gate_path: str,
             trained: FinetuneResult, evaluation: EvaluationResult, flow_run_id: str,
             run_name: str) -> RegisterResult:
    """Prefect task: MLflow run + registered model version with lineage and aliases."""
    return register_model(config, snapshot, quality_path, gate_path, trained, evaluation,
                          flow_run_id, run_name)
