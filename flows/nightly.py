"""The nightly Finegate flow: landing drops -> curated snapshot -> quality gate -> model.

The flow body below is the DAG. Each step is a thin Prefect task in ``flows/steps.py`` that
calls one stage module in ``tasks/``; ingest, clean, dedup, snapshot and the gate run their
partitions on the flow's Dask cluster (a LocalCluster, or ``dask.scheduler_address``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from distributed import Client, LocalCluster
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.deployments.runner import RunnerDeployment
from prefect.runtime import flow_run
from prefect.schedules import Cron

from finegate.core.config import Config, DaskConfig, config_error_message, load_config
from finegate.core.lake import Lake, lake_lock
from finegate.core.landing import list_drops
from finegate.core.results import (
    Accounting,
    EvaluationResult,
    GateResult,
    LabelsResult,
    RegisterResult,
    ReportInputs,
    SnapshotResult,
)
from finegate.core.text import label_lookup
from finegate.flows.steps import (
    build_snapshot,
    check_leakage,
    clean_drop,
    cross_validate,
    deduplicate,
    evaluate_model,
    find_trained_model,
    ingest_drop,
    kfold_final_training,
    plan_drops,
    promote_model,
    pull_reviews,
    record_drop,
    recount,
    register_model,
    retract_drops,
    review_labels,
    review_queue,
    run_gate,
    score_snapshot,
    train_model,
    write_report,
)
from finegate.tasks.ledger import ledger_drops
from finegate.tasks.register import RunLineage
from finegate.tasks.validate import SuiteError, check_suites

# Staging folders older than this, found by a successful run holding the lake's lock, were
# left by a killed run (a live writer touches its folder far more often).
STALE_STAGING_S = 3600


class PreflightError(RuntimeError):
    """The configuration or an expectation suite is wrong: found before any work starts."""


@dataclass(frozen=True)
class NightlyResult:
    """Where a nightly run left its results; ``evaluation`` is None when training was skipped."""

    run_dir: str
    drops_ingested: list[str]
    snapshot: SnapshotResult
    scorecard_path: str
    gate: GateResult
    evaluation: EvaluationResult | None
    registered: RegisterResult
    accounting: Accounting
    report: str

    @property
    def trained(self) -> bool:
        """Whether this run trained a model (False: the snapshot was already trained on)."""
        return self.evaluation is not None


@flow(name="finegate-nightly", log_prints=True)
def nightly(config: Config | None = None) -> NightlyResult:
    """Ingest new drops, curate the history, gate it, and train only on a new snapshot.

    ``config`` defaults to :func:`load_config` (``FINEGATE_CONFIG`` + ``FINEGATE_*``), which is
    how deployments run it.
    """
    if config is None:
        try:
            config = load_config()
        except (OSError, ValueError, yaml.YAMLError) as err:  # pydantic's errors are ValueErrors
            raise PreflightError(config_error_message(err)) from err  # one paragraph in the log
    preflight(config)  # before the lock, the cluster or any stage: a broken suite fails now
    lake = Lake.at(config.lake_path)
    with lake_lock(lake), dask_cluster(config.dask) as client:
        print(f"Dask cluster: {client.dashboard_link or client.scheduler.address}")
        result = nightly_dag(config, lake)
        removed = lake.remove_stale_staging(STALE_STAGING_S)
        print(f"removed {removed} stale staging folder(s) left by killed runs")
        return result


def nightly_dag(config: Config, lake: Lake) -> NightlyResult:
    """The DAG, stage by stage (inside the flow, with the Dask client set)."""
    run_name, run_dir = this_run(lake)
    if config.label_studio.url:  # people's answers since last night arrive as a review drop
        pull_reviews(config.landing_path, lake, config.label_studio)
    drops = plan_drops(config.landing_path, lake)
    print(f"run {run_name}: {drops.describe()}")
    retract_drops(lake, drops.retracted)
    for drop in drops.to_ingest:
        ingested = ingest_drop(lake, config.landing_path, drop, config.dask,
                               config.annotators.vote_delimiter)
        clean_drop(lake, drop, config.label_set, config.filters)
        record_drop(lake, drop, drops.scans[drop], ingested.rows_read)
    drop_names, rows_read = ingested_history(lake)  # every drop so far, and rows read
    duplicates = deduplicate(lake, drop_names, config.dedup)
    reviewed = review_labels(lake, drop_names, duplicates, config.labels, config.label_quality,
                             config.annotators.consensus)
    curated = build_snapshot(lake, drop_names, duplicates, reviewed, config.split)
    leaks = check_leakage(lake, curated, config.evaluation.golden_path, config.label_set,
                          config.dedup)
    scored = score_snapshot(lake, rows_read, curated, duplicates, reviewed, leaks, config.labels)
    inputs = report_inputs(lake, run_name, run_dir, curated, scored.scorecard_path, reviewed,
                           drops.to_ingest)
    gate = run_gate(lake, curated, scored, config.expectations_path, config.labels, inputs)
    curated.check_trainable()
    registered = find_trained_model(config.registry, curated.digest, config.train.digest())
    evaluation = None
    if registered is None:
        crossval = None
        if config.split.strategy == "kfold":  # mean ± spread over the folds, first: the
            crossval = cross_validate(curated, run_dir, config.label_set, config.train,
                                      config.evaluation, config.split.folds)
        # registered model then trains on every fold but the held-out test fold
        trained = train_model(lake, curated, config.labels,
                              *(kfold_final_training(crossval, config.train) if crossval
                                else (config.train,)))
        evaluation = evaluate_model(trained.model_dir, curated.data_path, run_dir,
                                    config.label_set, config.train, config.evaluation,
                                    leaks.leaked_golden)
        registered = register_model(config.registry, curated, scored, gate, trained, evaluation,
                                    config.train, lineage(config, run_name), crossval)
    if not registered.decided and registered.evaluation_report:  # new, or stopped before it
        promote_model(config.registry, registered.version, registered.evaluation_report,
                      config.promotion, config.label_set, config.train,
                      config.evaluation.golden_path)
        registered = find_trained_model(config.registry, curated.digest, config.train.digest())
    accounting = recount(lake, rows_read, curated)
    page = write_report(inputs, registered.evaluation_report, f"{registered.tracking_uri} "
                        f"models:/{registered.model_name}/{registered.version}")
    if config.queue.nightly:  # after the report: a queue problem is only a warning
        review_queue(lake, config.labels, config.queue, config.registry, config.train,
                     config.label_studio)
    result = NightlyResult(run_dir, drops.to_ingest, curated, scored.scorecard_path, gate,
                           evaluation, registered, accounting, page)
    create_markdown_artifact(key="finegate-nightly", markdown=summary_markdown(result),
                             description="Finegate nightly run summary")
    return result


def preflight(config: Config) -> None:
    """Check what a run needs before it takes the lake's lock, starts a cluster or reads a
    drop: the landing zone, label aliases, golden set, model folder and every expectation
    suite. Raises :class:`PreflightError` naming each problem."""
    problems = []
    try:
        list_drops(Path(config.landing_path))
    except FileNotFoundError as err:
        problems.append(str(err))
    try:
        label_lookup(config.label_set)
    except ValueError as err:
        problems.append(str(err))
    golden, model = config.evaluation.golden_path, config.train.model_path
    if golden and not Path(golden).is_file():
        problems.append(f"evaluation.golden_path {golden} is not a file")
    if model and not Path(model).is_dir():
        problems.append(f"train.model_path {model} is not a folder")
    try:
        check_suites(config.expectations_path)
    except SuiteError as err:
        problems.append(str(err))
    if problems:
        raise PreflightError("Finegate did not start the run: " + ". Also: ".join(problems))


def this_run(lake: Lake) -> tuple[str, str]:
    """The run's name (scheduled time + flow run name) and its folder in the lake."""
    run_name = f"{flow_run.get_scheduled_start_time():%Y%m%dT%H%M%SZ}-{flow_run.get_name()}"
    return run_name, str(lake.run(run_name))


def ingested_history(lake: Lake) -> tuple[list[str], int]:
    """Every drop in the lake's history, in name order, and the rows read from them."""
    history = ledger_drops(lake)
    return list(history), sum(history.values())


def report_inputs(lake: Lake, run_name: str, run_dir: str, curated: SnapshotResult,
                  scorecard_path: str, reviewed: LabelsResult,
                  drops: list[str] | None = None) -> ReportInputs:
    """What the run's report reads, named once for the stopped and the finished night."""
    return ReportInputs(run_name=run_name, run_dir=run_dir, scorecard_path=scorecard_path,
                        gate_path=f"{run_dir}/gate.json", data_path=curated.data_path,
                        duplicates_path=curated.duplicates_path,
                        decisions_path=reviewed.decisions_path,
                        quarantine_dir=str(lake.quarantine_root), drops=list(drops or []))


def lineage(config: Config, run_name: str) -> RunLineage:
    """What the registered model records about where it came from."""
    return RunLineage(run_name=run_name, flow_run_id=str(flow_run.get_id() or ""),
                      landing_path=config.landing_path, labels=list(config.labels),
                      split=config.split)


def summary_markdown(result: NightlyResult) -> str:
    """A short Markdown report of a run, for the Prefect UI."""
    a, e, r = result.accounting, result.evaluation, result.registered
    return "\n".join([
        "# Finegate nightly run",
        f"- snapshot `{result.snapshot.digest[:16]}`: {result.snapshot.rows} rows at "
        f"`{result.snapshot.path}`",
        f"- accounting: read {a.rows_read} = curated {a.curated} + quarantined "
        f"{a.quarantined} + duplicates {a.duplicates}"
        + (f" ({a.retracted} more read from retracted drops)" if a.retracted else ""),
        f"- drops ingested tonight: {', '.join(result.drops_ingested) or 'none'}",
        (f"- test accuracy {e.accuracy:.3f}, macro-F1 {e.macro_f1:.3f} on {e.test_rows} rows"
         if e else "- snapshot unchanged: training skipped"),
        f"- model `{r.model_name}` version {r.version} ({', '.join(r.aliases) or 'no alias'}) "
        f"— [MLflow run]({r.tracking_uri}) `{r.run_id}`",
        f"- Data Docs: [{result.gate.data_docs}](file://{result.gate.data_docs})",
        f"- scorecard `{result.scorecard_path}`, gate `{result.gate.gate_path}`",
    ])


@contextmanager
def dask_cluster(settings: DaskConfig) -> Iterator[Client]:
    """The run's Dask client: on the configured scheduler, or on a new LocalCluster.

    It is the default client while the flow runs, so tasks find it through
    ``prefect_dask.get_dask_client()`` and run their partitions on the cluster.
    """
    if settings.scheduler_address:
        with Client(settings.scheduler_address, set_as_default=True) as client:
            yield client
        return
    with LocalCluster(n_workers=settings.n_workers, processes=True,
                      threads_per_worker=settings.threads_per_worker,
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
