"""The nightly Finegate flow: landing drops -> curated snapshot -> quality gate -> model.

Each stage is a Prefect task in ``tasks/<stage>.py``. Ingest, clean, dedup and snapshot run
their partitions on the flow's Dask cluster (a LocalCluster, or ``dask.scheduler_address``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner

from finegate.config import Config, load_config
from finegate.lake import Lake
from tasks.clean import clean
from tasks.dedup import dedup
from tasks.evaluate import EvaluationResult, evaluate
from tasks.finetune import finetune
from tasks.ingest import ingest, list_drops
from tasks.labels import review as review_labels
from tasks.quality import accounting, quality
from tasks.register import RegisterResult, register
from tasks.snapshot import SnapshotResult, build_snapshot
from tasks.split import split
from tasks.validate import validate


@dataclass(frozen=True)
class NightlyResult:
    """Where a nightly run left its results."""

    run_dir: str
    snapshot: SnapshotResult
    scorecard_path: str
    gate_path: str
    data_docs: str
    evaluation: EvaluationResult
    registered: RegisterResult
    accounting: dict[str, Any]


@flow(name="finegate-nightly", log_prints=True)
def nightly(config: Config) -> NightlyResult:
    """Ingest, clean, dedup, review labels, score, gate, split, fine-tune, evaluate, register."""
    run_name = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{flow_run.get_name() or 'local'}"
    run_dir = str(Lake.at(config.lake_path).run(run_name))
    drops = list_drops(Path(config.landing_path))
    start_dask_cluster()
    print(f"run {run_name}: {len(drops)} drop(s) in {config.landing_path}: {drops}")

    ingested = [ingest(config, drop) for drop in drops]
    for drop in drops:
        clean(config, drop)
    duplicates = dedup(config, drops)
    reviewed = review_labels(config, drops, duplicates)
    snapshot = build_snapshot(config, drops, duplicates, reviewed)
    rows_read = sum(result.rows_read for result in ingested)
    scored = quality(config, rows_read, snapshot, duplicates, reviewed)
    gate = validate(config, snapshot.data_path, scored.scorecard, run_dir, run_name)
    split(config, snapshot.data_path)
    trained = finetune(config, snapshot.data_path, run_dir)
    evaluation = evaluate(config, trained.model_dir, snapshot.data_path, run_dir)
    registered = register(config, snapshot, scored.scorecard_path, gate.gate_path, trained,
                          evaluation, str(flow_run.get_id() or ""), run_name)
    rows = accounting(config, rows_read, snapshot)

    result = NightlyResult(run_dir=run_dir, snapshot=snapshot,
                           scorecard_path=scored.scorecard_path, gate_path=gate.gate_path,
                           data_docs=gate.data_docs, evaluation=evaluation,
                           registered=registered, accounting=rows)
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
        f"- test accuracy {e.accuracy:.3f}, macro-F1 {e.macro_f1:.3f} on {e.test_rows} rows",
        f"- model `{r.model_name}` version {r.version} ({', '.join(r.aliases)})",
        f"- scorecard `{result.scorecard_path}`, gate `{result.gate_path}`",
    ])


def dask_runner(config: Config) -> DaskTaskRunner:
    """The flow's Dask cluster: the configured scheduler, or a LocalCluster.

    Its client is made the default one, so tasks called in the flow's process find it through
    ``prefect_dask.get_dask_client()`` and run their partitions on the cluster.
    """
    client = {"set_as_default": True}
    if config.dask.scheduler_address:
        return DaskTaskRunner(address=config.dask.scheduler_address, client_kwargs=client)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", client_kwargs=client,
                          cluster_kwargs={
                              "n_workers": config.dask.n_workers,
                              "threads_per_worker": config.dask.threads_per_worker,
                              "processes": True, "dashboard_address": ":0",
                              "silence_logs": logging.WARNING,
                          })


def start_dask_cluster() -> None:
    """Connect the flow's Dask task runner now (it connects lazily, on first submit)."""
    runner = FlowRunContext.get().task_runner
    if isinstance(runner, DaskTaskRunner):
        print(f"Dask cluster: {runner.client.dashboard_link or runner.client.scheduler.address}")


def run_nightly(config: Config) -> NightlyResult:
    """Run the nightly flow once on the Dask cluster the config names."""
    return nightly.with_options(task_runner=dask_runner(config))(config)


if __name__ == "__main__":
    run_nightly(load_config())
