"""The nightly Finegate flow: landing drops -> curated snapshot -> quality gate -> model.

Each stage is a Prefect task in ``tasks/<stage>.py``. Ingest, clean, dedup and snapshot run
their partitions on the flow's Dask cluster (a LocalCluster, or ``dask.scheduler_address``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.deployments.runner import RunnerDeployment
from prefect.runtime import flow_run
from prefect.schedules import Cron

from finegate.config import Config, load_config
from finegate.lake import Lake, lake_lock
from tasks.clean import clean
from tasks.dedup import dedup
from tasks.evaluate import EvaluationResult, evaluate
from tasks.finetune import finetune
from tasks.ingest import ingest
from tasks.labels import review as review_labels
from tasks.ledger import ledger_drops, plan, record
from tasks.promote import promote
from tasks.quality import accounting, quality
from tasks.register import RegisterResult, find_registered, register, registered_for
from tasks.report import report
from tasks.snapshot import SnapshotResult, build_snapshot
from tasks.split import split
from tasks.validate import QualityGateFailed, validate


@dataclass(frozen=True)
class NightlyResult:
    """Where a nightly run left its results; ``evaluation`` is None when training was skipped."""

    run_dir: str
    drops_ingested: list[str]
    snapshot: SnapshotResult
    scorecard_path: str
    gate_path: str
    data_docs: str
    evaluation: EvaluationResult | None
    registered: RegisterResult
    trained: bool
    accounting: dict[str, Any]
    report: str


@flow(name="finegate-nightly", log_prints=True)
def nightly(config: Config | None = None) -> NightlyResult:
    """Ingest new drops, curate the history, gate it, and train only on a new snapshot.

    ``config`` defaults to :func:`load_config` (``FINEGATE_CONFIG`` + ``FINEGATE_*``), which is
    how deployments run it.
    """
    config = config or load_config()
    with lake_lock(Lake.at(config.lake_path)), dask_cluster(config) as client:
        print(f"Dask cluster: {client.dashboard_link or client.scheduler.address}")
        return nightly_stages(config)


def nightly_stages(config: Config) -> NightlyResult:
    """The DAG, stage by stage (called inside the flow, with the Dask client set)."""
    run_name = f"{flow_run.get_scheduled_start_time():%Y%m%dT%H%M%SZ}-{flow_run.get_name()}"
    run_dir = str(Lake.at(config.lake_path).run(run_name))

    drops = plan(config)
    print(f"run {run_name}: {drops.describe()}")
    for drop in drops.to_ingest:
        ingested = ingest(config, drop)
        clean(config, drop)
        record(config, drop, drops.scans[drop], ingested.rows_read)
    history = ledger_drops(Lake.at(config.lake_path))
    duplicates = dedup(config, list(history))
    reviewed = review_labels(config, list(history), duplicates)
    snapshot = build_snapshot(config, list(history), duplicates, reviewed)
    rows_read = sum(history.values())
    scored = quality(config, rows_read, snapshot, duplicates, reviewed)
    report_inputs = {
        "run_name": run_name, "run_dir": run_dir, "scorecard_path": scored.scorecard_path,
        "gate_path": str(Path(run_dir) / "gate.json"), "data_path": snapshot.data_path,
        "duplicates_path": snapshot.duplicates_path, "decisions_path": reviewed.decisions_path,
        "quarantine_dir": str(Lake.at(config.lake_path).root / "quarantine")}
    try:
        gate = validate(config, snapshot.data_path, scored.scorecard, run_dir, run_name)
    except QualityGateFailed:
        report(config, report_inputs)  # a stopped night is the one whose report matters most
        raise
    split(config, snapshot.data_path)

    registered = registered_for(config, snapshot.digest)
    evaluation = None
    if registered is None:
        trained = finetune(config, snapshot)
        evaluation = evaluate(config, trained.model_dir, snapshot.data_path, run_dir)
        registered = register(config, snapshot, scored.scorecard_path, gate.gate_path, trained,
                              evaluation, str(flow_run.get_id() or ""), run_name)
    else:
        print(f"snapshot {snapshot.digest[:16]} already trained with these settings as model "
              f"version {registered.version}: no retraining, no new version")
    if not registered.decided and registered.evaluation_report:  # new, or stopped before it
        promote(config, registered.version, registered.evaluation_report)
        registered = find_registered(config, snapshot.digest)  # with its aliases after promotion
    rows = accounting(config, rows_read, snapshot)
    model_uri = f"models:/{registered.model_name}/{registered.version}"
    report_page = report(config, {**report_inputs, "evaluation_path": registered.evaluation_report,
                                  "mlflow": f"{registered.tracking_uri} {model_uri}"})

    result = NightlyResult(run_dir=run_dir, drops_ingested=drops.to_ingest, snapshot=snapshot,
                           scorecard_path=scored.scorecard_path, gate_path=gate.gate_path,
                           data_docs=gate.data_docs, evaluation=evaluation,
                           registered=registered, trained=evaluation is not None,
                           accounting=rows, report=report_page)
    create_markdown_artifact(key="finegate-nightly", markdown=summary_markdown(result),
                             description="Finegate nightly run summary")
    return result


def summary_markdown(result: NightlyResult) -> str:
    """A short Markdown report of a run, for the Prefect UI."""
    a, e, r = result.accounting, result.evaluation, result.registered
    return "\n".join([
        "# Finegate nightly run",
        f"- snapshot `{result.snapshot.digest[:16]}`: {result.snapshot.rows} rows at "
        f"`{result.snapshot.path}`",
        f"- accounting: read {a['rows_read']} = curated {a['curated']} + quarantined "
        f"{a['quarantined']} + duplicates {a['duplicates']}",
        f"- drops ingested tonight: {', '.join(result.drops_ingested) or 'none'}",
        (f"- test accuracy {e.accuracy:.3f}, macro-F1 {e.macro_f1:.3f} on {e.test_rows} rows"
         if e else "- snapshot unchanged: training skipped"),
        f"- model `{r.model_name}` version {r.version} ({', '.join(r.aliases) or 'no alias'}) "
        f"— [MLflow run]({r.tracking_uri}) `{r.run_id}`",
        f"- Data Docs: [{result.data_docs}](file://{result.data_docs})",
        f"- scorecard `{result.scorecard_path}`, gate `{result.gate_path}`",
    ])


@contextmanager
def dask_cluster(config: Config) -> Iterator[Client]:
    """The run's Dask client: on the configured scheduler, or on a new LocalCluster.

    It is the default client while the flow runs, so tasks find it through
    ``prefect_dask.get_dask_client()`` and run their partitions on the cluster.
    """
    if config.dask.scheduler_address:
        with Client(config.dask.scheduler_address, set_as_default=True) as client:
            yield client
        return
    with LocalCluster(n_workers=config.dask.n_workers, processes=True,
                      threads_per_worker=config.dask.threads_per_worker,
                      dashboard_address=":0", silence_logs=logging.WARNING) as cluster, \
            Client(cluster, set_as_default=True) as client:
        yield client


def run_nightly(config: Config) -> NightlyResult:
    """Run the nightly flow once."""
    return nightly(config)


def nightly_deployment(cron: str, timezone: str) -> RunnerDeployment:
    """The nightly deployment: a cron schedule, and never two runs at once.

    Runs load their config when they start (``FINEGATE_CONFIG`` + ``FINEGATE_*``), so secrets
    never travel as flow parameters.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return nightly.to_deployment(
        name="nightly", schedules=[Cron(cron, timezone=timezone)],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["finegate"],
        description="Finegate nightly run (finegate serve)")


def serve_nightly(cron: str, timezone: str) -> None:
    """Serve the nightly deployment from this process until interrupted."""
    from prefect import serve

    serve(nightly_deployment(cron, timezone))


if __name__ == "__main__":
    run_nightly(load_config())
