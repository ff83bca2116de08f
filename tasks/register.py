"""Register: an MLflow run with the model, its metrics and its full data lineage.

Logs params, metrics, the snapshot as an MLflow dataset input (with Finegate's own digest of the
whole snapshot, not MLflow's first-10,000-rows one), the scorecard, gate and evaluation reports,
and lineage tags (snapshot digest, drops, sources, code version, Prefect flow run). The model is
registered with a model card; ``tasks/promote.py`` names it ``challenger`` and decides whether
it becomes ``champion``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from finegate.core.config import PROJECT_ROOT, RegistrySettings, SplitConfig, TrainConfig
from finegate.core.lake import read_json
from finegate.core.registry import (
    EVALUATION_TAG,
    SNAPSHOT_TAG,
    TRAINING_TAG,
    client,
    ensure_experiment,
    find_registered,
    mlflow_uri,
)
from finegate.core.results import EvaluationResult, FinetuneResult, RegisterResult, SnapshotResult


@dataclass(frozen=True)
class RunLineage:
    """What a run logs about where its data came from and how it was split."""

    run_name: str
    flow_run_id: str
    landing_path: str
    labels: list[str]
    split: SplitConfig


def register_model(settings: RegistrySettings, snapshot: SnapshotResult, scorecard_path: str,
                   gate_path: str, trained: FinetuneResult, evaluation: EvaluationResult, *,
                   train: TrainConfig, lineage: RunLineage,
                   crossval_path: str | None = None) -> RegisterResult:
    """Log an MLflow run with the model's lineage, metrics and reports; register the model,
    tagged with its snapshot and training digests (``train`` gives the latter).
    ``crossval_path`` (kfold): the cross-validation's ``crossval.json``, logged as metrics,
    params, an artifact and a model card section."""
    import mlflow

    scorecard = read_json(Path(scorecard_path))
    crossval = read_json(Path(crossval_path)) if crossval_path else None
    card = model_card(settings.model_name, lineage.labels, snapshot, scorecard,
                      read_json(Path(gate_path)), trained, evaluation, crossval=crossval)
    # A retry after a partial failure must not register the same snapshot twice; it finishes
    # what the failed try left undone (the version's model card).
    existing = find_registered(settings, snapshot.digest, train.digest())
    if existing is not None:
        registry = client(settings)
        if not registry.get_model_version(settings.model_name, existing.version).description:
            registry.update_model_version(settings.model_name, existing.version,
                                          description=card)
        return existing
    mlflow.set_tracking_uri(mlflow_uri(settings))
    with mlflow.start_run(experiment_id=ensure_experiment(settings),
                          run_name=lineage.run_name) as run:
        log_params_and_metrics(trained, evaluation, scorecard, lineage)
        if crossval is not None:
            log_crossval(crossval, str(crossval_path))
        log_lineage(snapshot, lineage)
        log_reports(snapshot, scorecard_path, gate_path, evaluation.report_path, card)
        model_uri = log_model(trained.model_dir)
    # The version is created with its lineage tags in one call, so it is never found untagged.
    version = str(mlflow.register_model(model_uri, settings.model_name, tags={
        SNAPSHOT_TAG: snapshot.digest, TRAINING_TAG: train.digest(),
        EVALUATION_TAG: evaluation.report_path}).version)
    client(settings).update_model_version(settings.model_name, version, description=card)
    return RegisterResult(tracking_uri=settings.public_uri, run_id=run.info.run_id,
                          model_name=settings.model_name, version=version, aliases=[],
                          evaluation_report=evaluation.report_path, decided=False)


def log_params_and_metrics(trained: FinetuneResult, evaluation: EvaluationResult,
                           scorecard: dict[str, Any], lineage: RunLineage) -> None:
    """Training settings, split shares and labels as params; test, golden, training and
    scorecard numbers as metrics."""
    import mlflow

    mlflow.log_params({f"train.{k}": v for k, v in trained.params.items()})
    mlflow.log_params({"split.strategy": lineage.split.strategy,
                       "split.train": lineage.split.train,
                       "split.validation": lineage.split.validation,
                       "split.test": lineage.split.test, "labels": ",".join(lineage.labels)})
    if evaluation.golden_rows:
        mlflow.log_metric("golden_macro_f1", evaluation.golden_macro_f1)
    mlflow.log_metrics({"test_accuracy": evaluation.accuracy,
                        "test_macro_f1": evaluation.macro_f1,
                        "train_loss": trained.train_loss, "train_seconds": trained.seconds,
                        "train_rows": trained.train_rows, "test_rows": evaluation.test_rows})
    mlflow.log_metrics({f"quality.{k}": float(v) for k, v in scorecard.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)})


def crossval_metrics(crossval: dict[str, Any]) -> dict[str, float]:
    """The cross-validation figures as MLflow metrics: mean and spread, and every fold's."""
    metrics = {f"cv_{m}_{s}": float(crossval[m][s]) for m in ("accuracy", "macro_f1")
               for s in ("mean", "std")}
    for r in crossval["rounds"]:
        metrics.update({f"cv_fold_{r['fold']}_accuracy": float(r["accuracy"]),
                        f"cv_fold_{r['fold']}_macro_f1": float(r["macro_f1"]),
                        f"cv_fold_{r['fold']}_rows": float(r["rows"])})
    return metrics


def log_crossval(crossval: dict[str, Any], path: str) -> None:
    """Under kfold: the cross-validation figures (metrics), what the registered model trained
    on (params) and ``crossval.json`` (artifact) in the active run."""
    import mlflow

    final = crossval["final"]
    mlflow.log_metrics(crossval_metrics(crossval))
    mlflow.log_params({"kfold.folds": crossval["folds"],
                       "kfold.held_out_fold": final["held_out_fold"],
                       "kfold.train_rows": final["train_rows"],
                       "kfold.steps": final["steps"]})
    mlflow.log_artifact(path, artifact_path="evaluation")


def crossval_card(crossval: dict[str, Any] | None) -> str:
    """The model card's cross-validation section (kfold), empty otherwise."""
    if not crossval:
        return ""
    final = crossval["final"]
    folds = "\n".join(f"  - fold {r['fold']}: macro-F1 {r['macro_f1']:.3f}, accuracy "
                      f"{r['accuracy']:.3f} on {r['rows']} rows" for r in crossval["rounds"])
    steps = (f"{final['steps']} steps (the rounds' median early-stopping step)"
             if final["steps"] else "the configured step budget")
    return (f"\n## Cross-validation ({crossval['folds']} folds)\n"
            f"- macro-F1 {crossval['macro_f1']['mean']:.3f} ± {crossval['macro_f1']['std']:.3f}, "
            f"accuracy {crossval['accuracy']['mean']:.3f} ± {crossval['accuracy']['std']:.3f} "
            f"(mean ± standard deviation over the folds)\n{folds}\n"
            f"- this model: trained on every fold but fold {final['held_out_fold']} "
            f"({final['train_rows']} rows) for {steps}; fold {final['held_out_fold']} is its "
            f"held-out test split\n")


def log_lineage(snapshot: SnapshotResult, lineage: RunLineage) -> None:
    """Lineage tags (snapshot, drops, landing zone, code version, flow run) and the snapshot as
    the run's dataset input."""
    import mlflow

    mlflow.set_tags({
        SNAPSHOT_TAG: snapshot.digest, "finegate.snapshot_path": snapshot.path,
        "finegate.drops": ",".join(snapshot.drops), "finegate.landing": lineage.landing_path,
        "finegate.code_version": code_version(), "finegate.flow_run_id": lineage.flow_run_id,
    })
    log_snapshot_input(snapshot)


def log_reports(snapshot: SnapshotResult, scorecard_path: str, gate_path: str,
                evaluation_path: str, card: str) -> None:
    """The model card, confusion matrices, scorecard, gate and evaluation reports, snapshot
    manifest and GX Data Docs as artifacts of the active run."""
    import mlflow

    mlflow.log_text(card, "model_card.md")
    for png in sorted(Path(evaluation_path).parent.glob("confusion_*.png")):
        mlflow.log_artifact(str(png), artifact_path="evaluation")
    for path in (scorecard_path, gate_path, evaluation_path,
                 str(Path(snapshot.path) / "manifest.json")):
        mlflow.log_artifact(path, artifact_path="quality")
    data_docs = Path(gate_path).parent / "data_docs"
    if data_docs.is_dir():
        mlflow.log_artifacts(str(data_docs), artifact_path="data_docs")


def log_model(model_dir: str) -> str:
    """Log the model and tokenizer in ``model_dir`` as an ``mlflow.transformers`` model of the
    active run; returns its URI."""
    import mlflow
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    info = mlflow.transformers.log_model(
        transformers_model={
            "model": AutoModelForSequenceClassification.from_pretrained(model_dir),
            "tokenizer": AutoTokenizer.from_pretrained(model_dir),
        },
        name="model", task="text-classification",
        # Without explicit requirements MLflow infers torchvision, which is not installed.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          f"transformers=={transformers.__version__}"],
    )
    return info.model_uri


def log_snapshot_input(snapshot: SnapshotResult) -> None:
    """Log the snapshot as the run's training dataset, named and digested by Finegate."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    frame = pq.read_table(snapshot.data_path, columns=["id", "label", "split", "drop"]).to_pandas()
    dataset = from_pandas(frame, source=snapshot.data_path, name=f"snapshot-{snapshot.digest[:16]}",
                          digest=snapshot.digest[:32])
    mlflow.log_input(dataset, context="training",
                     tags={SNAPSHOT_TAG: snapshot.digest})


def human_review_line(scorecard: dict[str, Any]) -> str:
    """The model card's line on people's reviews (review drops), empty when there were none."""
    review = scorecard.get("human_review") or {}
    if not review.get("rows_reviewed"):
        return ""
    quality = review.get("mean_consensus_quality")
    return (f"- human review: {review['rows_reviewed']} rows decided by people "
            f"({review['relabelled']} relabelled, {review['restored']} restored after the label "
            f"review dropped them); consensus: {review['consensus']}"
            + (f", mean consensus quality {quality:.3f}" if quality is not None else "") + "\n")


def policy_check_line(check: dict[str, Any] | None) -> str:
    """The label policy's proxy check in one line of the model card."""
    if not check:
        return "not checked"
    parts = [f"{name} {e['gain']:+.3f} macro-F1 (better in {e['confidence']:.0%} of bootstrap "
             f"resamples, {e['rows_changed']} rows changed)" if e["gain"] is not None else
             f"{name}: {e.get('note', 'not measured')}" for name, e in check["effects"].items()]
    return (f"configured {check['configured']}, applied {check['chosen']}; TF-IDF proxy on "
            f"{check['validation_rows']} held-out rows ({check['validation_labels']}): "
            + ("; ".join(parts) or check["note"]))


def model_card(model_name: str, labels: list[str], snapshot: SnapshotResult,
               scorecard: dict[str, Any], gate: dict[str, Any], trained: FinetuneResult,
               evaluation: EvaluationResult, crossval: dict[str, Any] | None = None) -> str:
    """A Markdown model card: data, quality, gate, metrics (with the cross-validation under
    kfold), training, hardware, time."""
    import platform

    import torch

    hardware = (torch.cuda.get_device_name(0) if trained.device == "cuda"
                else f"CPU ({platform.processor() or platform.machine()}, "
                     f"{torch.get_num_threads()} threads)")
    golden = (f"- golden set: macro-F1 {evaluation.golden_macro_f1:.3f} on "
              f"{evaluation.golden_rows} rows\n" if evaluation.golden_rows else "")
    params = "\n".join(f"- {k}: {v}" for k, v in trained.params.items())
    warnings = "".join(f"\n  - {w}" for w in gate.get("warnings", []))
    return f"""# {model_name}

Sequence classifier over {", ".join(labels)}, fine-tuned by Finegate.

## Data
- snapshot `{snapshot.digest}` ({snapshot.rows} rows, drops {", ".join(snapshot.drops)})
- class balance {scorecard["class_balance"]:.3f}
- duplicate ratio {scorecard["duplicate_ratio"]:.3f}, noise ratio {scorecard["noise_ratio"]:.3f}
- quarantine ratio {scorecard["quarantine_ratio"]:.3f}
- label policy: {policy_check_line(scorecard.get("label_policy_check"))}
{human_review_line(scorecard)}
## Quality gate
- passed with {len(gate.get("warnings", []))} warning(s){warnings}

## Metrics
- test split: accuracy {evaluation.accuracy:.3f}, macro-F1 {evaluation.macro_f1:.3f} on
  {evaluation.test_rows} rows
{golden}{crossval_card(crossval)}
## Training
{params}
- hardware: {hardware}; {trained.seconds:.0f} s, {trained.samples_per_second:.1f} samples/s
- registered: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}
- code version: {code_version()}
"""


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
