"""The nightly flow's Prefect tasks: each calls one stage and publishes what a person reads.

A task takes exactly its inputs (the lake, paths, small results, its settings section) and
returns the stage's typed result; retries sit on the decorator. Stages that run partitions
in parallel do so on the flow's Dask client (``on_dask``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from finegate.core.config import (
    DaskConfig,
    DedupConfig,
    EvaluationConfig,
    FiltersConfig,
    LabelsConfig,
    LabelSet,
    LabelStudioConfig,
    PromotionConfig,
    QueueConfig,
    RegistrySettings,
    SplitConfig,
    TrainConfig,
)
from finegate.core.history import record_history
from finegate.core.lake import Lake, read_json
from finegate.core.results import (
    Accounting,
    CleanResult,
    DedupResult,
    EvaluationResult,
    FinetuneResult,
    GateResult,
    IngestResult,
    LabelsResult,
    LeakageResult,
    PromotionDecision,
    PullResult,
    QualityResult,
    QueueResult,
    RegisterResult,
    ReportInputs,
    SnapshotResult,
)
from finegate.tasks import (
    clean,
    dedup,
    evaluate,
    finetune,
    ingest,
    labels,
    leakage,
    ledger,
    promote,
    pull,
    quality,
    queue,
    register,
    report,
    snapshot,
    validate,
)

_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def markdown_text(text: str) -> str:
    """User text for a Markdown artifact: every ASCII punctuation character backslash-escaped
    (CommonMark), so it shows as written and never becomes HTML, a link, an image or emphasis."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


@contextmanager
def on_dask() -> Iterator[None]:
    """Run the stage's ``dask.compute`` calls on the flow's cluster from inside a task."""
    from prefect_dask import get_dask_client

    with get_dask_client():
        yield


@task(name="plan-drops")
def plan_drops(landing: str, lake: Lake) -> ledger.DropPlan:
    """Tonight's new or changed drops."""
    return ledger.plan_drops(Path(landing), lake)


@task(name="retract-drops")
def retract_drops(lake: Lake, drops: list[str]) -> None:
    """Mark drops removed from the landing zone as retracted: their rows leave the snapshot."""
    for drop, rows in ledger.retract_drops(lake, drops).items():
        get_run_logger().warning(
            f"drop {drop} was removed from the landing zone: retracted, its {rows} rows leave "
            "the snapshot (ledger.json keeps it, marked retracted; deliver it again to restore)")


@task(name="ingest", task_run_name="ingest-{drop}", retries=1)
def ingest_drop(lake: Lake, landing: str, drop: str, settings: DaskConfig,
                vote_delimiter: str = "auto") -> IngestResult:
    """Parse one drop into bronze rows and quarantine; stop if the reader lost rows."""
    with on_dask():
        ingested = ingest.ingest_drop(Path(landing), drop, lake,
                                      txt_files_per_partition=settings.txt_files_per_partition,
                                      vote_delimiter=vote_delimiter)
    quality.check_ingest_count(ingested)
    return ingested


@task(name="clean", task_run_name="clean-{drop}", retries=1)
def clean_drop(lake: Lake, drop: str, label_set: LabelSet,
               filters: FiltersConfig) -> CleanResult:
    """Normalise and filter one ingested drop into silver rows and quarantine."""
    with on_dask():
        return clean.clean_drop(drop, lake, label_set, filters)


@task(name="record-drop", task_run_name="record-{drop}")
def record_drop(lake: Lake, drop: str, scan: dict[str, Any], rows_read: int) -> None:
    """Write an ingested and cleaned drop into the ledger."""
    ledger.record_drop(lake, drop, scan, rows_read)


@task(name="deduplicate")
def deduplicate(lake: Lake, drops: list[str], settings: DedupConfig) -> DedupResult:
    """Exact and near duplicates over the history."""
    with on_dask():
        return dedup.dedup_drops(lake, drops, settings)


@task(name="review-labels")
def review_labels(lake: Lake, drops: list[str], duplicates: DedupResult, label_names: list[str],
                  settings: LabelsConfig, consensus: str = "crowdlab") -> LabelsResult:
    """Annotator agreement, label-noise decisions and people's reviews for the rows that
    survive dedup."""
    return labels.review_labels(lake, drops, duplicates, label_names, settings,
                                consensus=consensus)


@task(name="build-snapshot")
def build_snapshot(lake: Lake, drops: list[str], duplicates: DedupResult,
                   reviewed: LabelsResult, shares: SplitConfig) -> SnapshotResult:
    """The curated snapshot, with every row's stable split."""
    with on_dask():
        return snapshot.build_curated_snapshot(lake, drops, duplicates, reviewed, shares)


@task(name="check-leakage")
def check_leakage(lake: Lake, curated: SnapshotResult, golden_path: str, label_set: LabelSet,
                  settings: DedupConfig) -> LeakageResult:
    """Golden rows the snapshot also holds (looked up in the dedup index on the cluster)."""
    with on_dask():
        leaks = leakage.check_leakage(lake, curated, golden_path, label_set, settings)
    if leaks.leaked_golden:
        print(f"{len(leaks.leaked_golden)} of {leaks.golden_rows} golden rows are also in the "
              f"snapshot ({leaks.leaked_by_split}); pairs: {leaks.leakage_path}")
    return leaks


@task(name="score-snapshot")
def score_snapshot(lake: Lake, rows_read: int, curated: SnapshotResult, duplicates: DedupResult,
                   reviewed: LabelsResult, leaks: LeakageResult,
                   label_names: list[str]) -> QualityResult:
    """The scorecard (also as a table artifact); fails if the accounting does not hold."""
    scored = quality.write_scorecard(rows_read, curated, lake, label_names, duplicates, reviewed,
                                     retracted=ledger.retracted_rows(lake), leakage=leaks)
    create_table_artifact(key="finegate-scorecard",
                          table=quality.scorecard_table(read_json(Path(scored.scorecard_path))),
                          description=f"Quality scorecard of snapshot {curated.digest[:16]}")
    return scored


@task(name="run-gate")
def run_gate(lake: Lake, curated: SnapshotResult, scored: QualityResult, expectations_path: str,
             label_names: list[str], run: ReportInputs) -> GateResult:
    """The quality gate; a critical failure stops the flow before training, after writing the
    night's report (a stopped night is the one whose report matters most)."""
    try:
        with on_dask():
            result = validate.run_gate(curated.data_path, scored.scorecard_path,
                                       Path(run.run_dir), expectations_path=expectations_path,
                                       labels=label_names, gx_root=lake.gx,
                                       run_name=run.run_name)
    except validate.QualityGateFailed as failure:
        write_report.fn(run)
        # found values are user data: escaped, so a label like <script> stays text
        create_markdown_artifact(key="finegate-gate", description="Why the run stopped",
                                 markdown=f"# Quality gate: FAILED\n\n"
                                          f"{markdown_text(str(failure))}")
        raise
    record_history(lake, curated.digest, Path(scored.scorecard_path))
    lines = [f"- warning: {markdown_text(w)}" for w in result.warnings] or ["- no warnings"]
    create_markdown_artifact(
        key="finegate-gate", description="Quality gate result",
        markdown="\n".join(["# Quality gate: passed", *lines,
                            f"\nData Docs: [{result.data_docs}](file://{result.data_docs})"]))
    return result


@task(name="find-trained-model", retries=2, retry_delay_seconds=2)
def find_trained_model(registry: RegistrySettings, snapshot_digest: str,
                       training_digest: str) -> RegisterResult | None:
    """An unchanged snapshot needs no retraining: the version already trained on it, if any."""
    from finegate.core.registry import find_registered

    return find_registered(registry, snapshot_digest, training_digest)


def training_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache key of a training: lake, snapshot digest and training settings, once the model
    exists. A retried or re-run flow reuses the model instead of training again; without a saved
    model there is no key (never cached), so a deleted model trains anew, resuming from a
    checkpoint if one is left."""
    lake, curated, settings = parameters["lake"], parameters["curated"], parameters["settings"]
    folder = lake.model(curated.digest, settings.digest())
    if not (folder / "config.json").is_file():
        return None
    return f"finetune-{lake.id}-{folder.name}"


@task(name="finetune", cache_key_fn=training_cache_key, persist_result=True, retries=1)
def train_model(lake: Lake, curated: SnapshotResult, label_names: list[str],
                settings: TrainConfig, data_path: str | None = None) -> FinetuneResult:
    """Fine-tune on the gated snapshot's train split (resumes from its checkpoint on retry);
    ``data_path``: another view of the snapshot (kfold's all-but-the-test-fold)."""
    progress = create_progress_artifact(0.0, key="finegate-training",
                                        description="Fine-tuning progress (% of steps)")

    def show(step: int, total: int, loss: float) -> None:
        update_progress_artifact(progress, 100 * step / total,
                                 description=f"step {step}/{total}, loss {loss:.3f}")

    return finetune.train(data_path or curated.data_path, label_names, settings,
                          lake.model(curated.digest, settings.digest()), on_progress=show)


@task(name="evaluate")
def evaluate_model(model_dir: str, data_path: str, run_dir: str, label_set: LabelSet,
                   train: TrainConfig, settings: EvaluationConfig,
                   leaked_golden: list[int]) -> EvaluationResult:
    """Test-split and golden-set metrics (leaked golden rows left out), also as a table."""
    result = evaluate.evaluate_model(model_dir, data_path, Path(run_dir), label_set=label_set,
                                     train=train, evaluation=settings,
                                     leaked_golden=leaked_golden)
    create_table_artifact(key="finegate-evaluation",
                          table=evaluate.per_class_rows(result.report_path),
                          description=evaluate.headline(result))
    return result


@task(name="cross-validate")
def cross_validate(curated: SnapshotResult, run_dir: str, label_set: LabelSet,
                   train: TrainConfig, settings: EvaluationConfig, folds: int) -> str:
    """Under kfold: one model per fold (test = that fold, validation = the fold before, train =
    the rest), scored on its fold; mean and spread over the folds in ``crossval.json``, with the
    registered model's training (``final``: every fold but the last, for the rounds' median
    early-stopping step; see :func:`kfold_final_training`). The fold models are deleted once
    scored."""
    import shutil

    import pyarrow.parquet as pq

    from finegate.core.lake import write_json
    from finegate.core.splits import final_steps, final_view, fold_summary, fold_view

    rounds = []
    for fold in range(folds):
        folder = Path(run_dir) / "crossval" / f"fold-{fold}"
        view = fold_view(curated.data_path, folder, fold, folds)
        trained = finetune.train(view, list(label_set.labels), train, folder / "model")
        result = evaluate.evaluate_model(trained.model_dir, view, folder, label_set=label_set,
                                         train=train,
                                         evaluation=settings.model_copy(update={"golden_path": ""}))
        rounds.append({"fold": fold, "accuracy": result.accuracy, "macro_f1": result.macro_f1,
                       "rows": result.test_rows, "train_rows": trained.train_rows,
                       "best_step": trained.params["best_step"]})
        shutil.rmtree(folder / "model")
    summary = fold_summary(rounds)
    data_path = final_view(curated.data_path, Path(run_dir) / "crossval" / "final", folds)
    fold_of_row = pq.read_table(data_path, columns=["fold"]).column("fold").to_pylist()
    summary["final"] = {"data_path": data_path, "held_out_fold": folds - 1,
                        "train_rows": sum(f != folds - 1 for f in fold_of_row),
                        "steps": final_steps(rounds)}
    print(f"{folds}-fold cross-validation: macro-F1 {summary['macro_f1']['mean']:.3f} ± "
          f"{summary['macro_f1']['std']:.3f}; the registered model trains on "
          f"{summary['final']['train_rows']} rows (all folds but fold {folds - 1})")
    return str(write_json(Path(run_dir) / "crossval.json", summary))


def kfold_final_training(crossval_path: str, train: TrainConfig) -> tuple[TrainConfig, str]:
    """The registered model's training settings and data under kfold: the cross-validation's
    median early-stopping step as the step cap (on GPU and CPU; the configured budget when no
    round stopped anywhere) and the view with every fold but the held-out last one as train."""
    from finegate.core.lake import read_json

    final = read_json(Path(crossval_path))["final"]
    steps = final["steps"]
    settings = (train.model_copy(update={"max_steps": steps, "cpu_max_steps": steps})
                if steps else train)
    return settings, final["data_path"]


@task(name="register", retries=2, retry_delay_seconds=2)
def register_model(registry: RegistrySettings, curated: SnapshotResult, scored: QualityResult,
                   gate: GateResult, trained: FinetuneResult, evaluation: EvaluationResult,
                   train: TrainConfig, lineage: register.RunLineage,
                   crossval_path: str | None = None) -> RegisterResult:
    """An MLflow run and a registered model version with its lineage (and, under kfold, the
    cross-validation figures)."""
    return register.register_model(registry, curated, scored.scorecard_path, gate.gate_path,
                                   trained, evaluation, train=train, lineage=lineage,
                                   crossval_path=crossval_path)


@task(name="promote", retries=1, retry_delay_seconds=2)
def promote_model(registry: RegistrySettings, version: str, report_path: str,
                  rules: PromotionConfig, label_set: LabelSet, train: TrainConfig,
                  golden_path: str) -> PromotionDecision:
    """Champion/challenger decision, shown as an artifact."""
    decision = promote.promote_challenger(registry, version, report_path, rules=rules,
                                          label_set=label_set, train=train,
                                          golden_path=golden_path)
    verdict = "promoted to champion" if decision.promote else "not promoted"
    create_markdown_artifact(key="finegate-promotion",
                             description=f"Model version {version}: {verdict}",
                             markdown=promote.promotion_markdown(version, decision))
    return decision


@task(name="recount")
def recount(lake: Lake, rows_read: int, curated: SnapshotResult) -> Accounting:
    """Recount every row from disk at the end of the run; fail if any is lost."""
    accounting = quality.account_rows(rows_read, curated, lake,
                                      retracted=ledger.retracted_rows(lake))
    quality.check_accounting(accounting)
    return accounting


@task(name="write-report")
def write_report(inputs: ReportInputs, evaluation_path: str | None = None,
                 mlflow: str = "") -> str:
    """The run's HTML report, linked from an artifact."""
    path = report.write_report(replace(inputs, evaluation_path=evaluation_path, mlflow=mlflow))
    create_link_artifact(key="finegate-report", link=path.as_uri(),
                         description="HTML quality report of this run")
    return str(path)


@task(name="review-queue")
def review_queue(lake: Lake, labels: list[str], settings: QueueConfig,
                 registry: RegistrySettings, train: TrainConfig,
                 studio: LabelStudioConfig) -> QueueResult | None:
    """The rows most worth a person's time (a table artifact); pushed to Label Studio when
    ``label_studio.url`` is set. It runs after the night's model is registered and reported, so
    a problem here is a warning, never a failed night: a champion that cannot score (e.g. one
    trained on another label set) hands the ranking to the TF-IDF stand-in."""
    logger = get_run_logger()
    try:
        scorer, why = queue.champion_scorer(registry, train)
        last = queue.latest_queue(lake)
        if last and last.get("key") == queue.queue_key(lake, labels, settings, scorer.version):
            logger.info("review queue %s still stands: same snapshot, model and settings",
                        last["queue"])
            return None
        try:
            result = queue.build_queue(lake, labels, settings, scorer)
        except Exception as err:  # noqa: BLE001
            if not scorer.model_dir:
                raise
            logger.warning("review queue: %s could not score (%s); the TF-IDF stand-in ranks "
                           "it", why, err)
            result = queue.build_queue(lake, labels, settings, queue.Scorer())
    except Exception as err:  # noqa: BLE001 - the night's model and report are already written
        logger.warning("review queue not written: %s: %s", type(err).__name__, err)
        return None
    rows = [{key: row[key] for key in ("rank", "id", "label", "suggested_label", "picked_by",
                                       "reason")} for row in read_jsonl(result.jsonl_path)]
    create_table_artifact(key="finegate-review-queue", table=rows,
                          description=f"Review queue {result.name}: {result.rows} rows, "
                          f"ranked by {result.model}; files in {result.folder}")
    if studio.url:
        try:
            project, imported = queue.push_queue(lake, result, labels, studio)
            get_run_logger().info("pushed %d tasks to Label Studio project %s", imported,
                                  project)
        except Exception as err:  # noqa: BLE001 - the queue's files are written either way
            get_run_logger().warning("review queue not pushed to %s: %s", studio.url, err)
    return result


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@task(name="pull-reviews")
def pull_reviews(landing: str, lake: Lake, studio: LabelStudioConfig) -> PullResult | None:
    """Completed Label Studio annotations into the landing zone as a review drop, before the
    run lists its drops (a server that does not answer is a warning: the night goes on)."""
    from finegate.core.label_studio import export_annotations

    try:
        tasks, users = export_annotations(studio)
    except Exception as err:  # noqa: BLE001 - the annotations wait for the next night
        get_run_logger().warning("no annotations pulled from %s: %s", studio.url, err)
        return None
    result = pull.pull_annotations(tasks, landing, lake, users)
    get_run_logger().info("review drop %s: %d rows, %d votes", result.drop, result.rows,
                          result.votes)
    return result
