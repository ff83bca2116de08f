"""The ``finegate`` command line: run the nightly flow, or the demo."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from finegate.core.config import Config, load_config

# Prefect's temporary server gives itself 20 s to start; a first start (database migrations) on
# a small machine takes longer. Its telemetry heartbeat is off, as in the Makefile (no network
# beyond package registries; it also raced the server's SQLite file: "database is locked").
# Set before Prefect is imported, which reads its settings then; the environment still wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

if TYPE_CHECKING:
    from finegate.flows.nightly import NightlyResult

app = typer.Typer(help="Finegate: data-quality-gated fine-tuning, run as a nightly flow.",
                  no_args_is_help=True, add_completion=False)

CONFIG_OPTION = typer.Option(None, "--config", "-c", envvar="FINEGATE_CONFIG",
                             help="YAML config; FINEGATE_* variables override it.")


# Exit codes (README, Troubleshooting): 0 the run finished; 1 an unexpected error (traceback);
# 2 the run was stopped on purpose: quality gate, accounting, or the lake busy with another run;
# 3 the configuration or an expectation suite is wrong (found before any work starts).
EXIT_STOPPED, EXIT_CONFIG = 2, 3


def _load_config(path: Path | None) -> Config:
    """The config, or a one-paragraph error and exit code 3."""
    import yaml
    from pydantic import ValidationError

    try:
        return load_config(path)
    except (FileNotFoundError, yaml.YAMLError, ValidationError, ValueError) as err:
        raise _fail(f"Finegate did not start: the configuration is not valid: {err}",
                    EXIT_CONFIG) from err


def _fail(message: str, code: int) -> typer.Exit:
    """Print a one-paragraph error; the exit (with ``code``) for the caller to raise."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=code)


def _preflight(config: Config) -> None:
    """Check the config and every expectation suite before Prefect's server starts."""
    from finegate.flows.nightly import PreflightError, preflight

    try:
        preflight(config)
    except PreflightError as err:
        raise _fail(str(err), EXIT_CONFIG) from err


def _run(config: Config) -> NightlyResult:
    from finegate.core.lake import LakeBusy
    from finegate.flows.nightly import PreflightError, run_nightly
    from finegate.tasks.quality import AccountingError
    from finegate.tasks.validate import QualityGateFailed

    _preflight(config)
    try:
        return run_nightly(config)
    except PreflightError as err:  # a suite edited since the check above
        raise _fail(str(err), EXIT_CONFIG) from err
    except (QualityGateFailed, AccountingError, LakeBusy) as err:
        raise _fail(f"\nFinegate stopped the run before shipping a model:\n{err}",
                    EXIT_STOPPED) from err


def print_result(result: NightlyResult, config: Config) -> None:
    """Tell the user where every result of a run is, and how to open the UIs."""
    a, e, r = result.accounting, result.evaluation, result.registered
    evaluation = (f"{e.report_path}  (accuracy {e.accuracy:.3f}, macro-F1 {e.macro_f1:.3f}, "
                  f"{e.test_rows} test rows)" if e else
                  "snapshot unchanged since this model version: training skipped")
    lines = [
        "",
        "Finegate nightly run finished.",
        f"  drops ingested   {', '.join(result.drops_ingested) or 'none (nothing new)'}",
        f"  rows read        {a.rows_read} = curated {a.curated} + quarantined "
        f"{a.quarantined} + duplicates {a.duplicates}"
        + (f"  ({a.retracted} more from retracted drops)" if a.retracted else ""),
        f"  snapshot         {result.snapshot.path}",
        f"  report           {result.report}",
        f"  scorecard        {result.scorecard_path}",
        f"  quality gate     {result.gate.gate_path}",
        f"  GX Data Docs     {result.gate.data_docs}",
        f"  quarantine       {Path(config.lake_path).resolve() / 'quarantine'}",
        f"  evaluation       {evaluation}",
        f"  MLflow           {r.tracking_uri}",
        f"  model            models:/{r.model_name}/{r.version}  aliases: "
        f"{', '.join(r.aliases) or 'none'}",
        "",
        "Open the UIs:",
        f"  MLflow   .venv/bin/mlflow ui --backend-store-uri {r.tracking_uri}",
        "  Prefect  .venv/bin/prefect server start   (then http://127.0.0.1:4200)",
    ]
    typer.echo("\n".join(lines))


@app.command()
def run(config: Path | None = CONFIG_OPTION) -> None:
    """Run the nightly flow once: ingest, clean, dedup, gate, fine-tune, register."""
    settings = _load_config(config)
    print_result(_run(settings), settings)


@app.command()
def serve(config: Path | None = CONFIG_OPTION,
          cron: str | None = typer.Option(None, help="Cron schedule; default schedule.cron."),
          timezone: str | None = typer.Option(None, help="Default schedule.timezone.")) -> None:
    """Serve the nightly flow on this machine on its cron schedule (one run at a time)."""
    from finegate.flows.nightly import serve_nightly

    settings = _load_config(config)
    _preflight(settings)
    if config:  # served runs load the config themselves when they start
        os.environ["FINEGATE_CONFIG"] = str(config.resolve())
    serve_nightly(cron or settings.schedule.cron, timezone or settings.schedule.timezone)


@app.command()
def promote(version: str = typer.Option(..., help="Model version to make champion."),
            config: Path | None = CONFIG_OPTION) -> None:
    """Make a model version the champion by hand (recorded in the champion history)."""
    from mlflow.exceptions import MlflowException

    from finegate.core.registry import PROMOTION_TAG, client, set_champion

    settings = _load_config(config)
    registry = client(settings.registry)
    try:
        registry.get_model_version(settings.model_name, version)
    except MlflowException as err:
        typer.secho(f"model {settings.model_name} has no version {version} in "
                    f"{settings.public_tracking_uri()}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from err
    set_champion(registry, settings.model_name, version)
    registry.set_model_version_tag(settings.model_name, version, PROMOTION_TAG,
                                   "promoted to champion by hand (finegate promote)")
    typer.echo(f"models:/{settings.model_name}@champion is now version {version}")


@app.command()
def rollback(config: Path | None = CONFIG_OPTION) -> None:
    """Give the champion alias back to the previous champion."""
    from finegate.core.registry import client, rollback_champion

    settings = _load_config(config)
    try:
        version = rollback_champion(client(settings.registry), settings.model_name)
    except ValueError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from err
    typer.echo(f"models:/{settings.model_name}@champion is back to version {version}")


@app.command()
def experiment(config: Path | None = CONFIG_OPTION,
               snapshot: Path | None = typer.Option(
                   None, help="Snapshot data folder/file; default: the BBC demo data."),
               noise: str = typer.Option("0,0.1,0.2,0.4", help="Label-noise rates."),
               fractions: str = typer.Option("0.1,0.25,0.5,1", help="Data fractions."),
               model: str = typer.Option("tfidf", help="tfidf (fast) or finetune (the "
                                                        "configured transformer)."),
               out: Path | None = typer.Option(None, help="Output folder.")) -> None:
    """Quality vs quantity: macro-F1 over label noise × data fraction × cleaning."""
    from finegate.demo import demo_snapshot
    from finegate.flows.quality_vs_quantity import quality_vs_quantity

    settings = _load_config(config)
    data = snapshot or demo_snapshot(Path(settings.lake_path) / "experiments" / "bbc.parquet")
    result = quality_vs_quantity(settings, str(data), [float(v) for v in noise.split(",")],
                                 [float(v) for v in fractions.split(",")], model,
                                 str(out) if out else None)
    typer.echo(f"{result['cells']} cells -> {result['out_dir']} (MLflow run "
               f"{result['mlflow_run_id']}); matching point: {result['matching_point']}")


RUN_DIR_ARGUMENT = typer.Argument(..., help="A run folder: <lake>/runs/<run>")


@app.command("report")
def report_command(run_dir: Path = RUN_DIR_ARGUMENT) -> None:
    """Re-render the HTML quality report of a finished run."""
    from finegate.tasks.report import read_report_inputs, render_report

    path = render_report(read_report_inputs(run_dir), run_dir / "report.html")
    typer.echo(f"report: {path}")


WORKSPACE_OPTION = typer.Option(Path("demo-workspace"),
                                help="Folder for the demo landing zone and lake.")


@app.command()
def demo(workspace: Path = WORKSPACE_OPTION) -> None:
    """Build the BBC News demo landing zone and run the nightly flow on it."""
    from finegate.demo import prepare_demo_landing, write_demo_config

    started = time.perf_counter()
    workspace.mkdir(parents=True, exist_ok=True)
    files = prepare_demo_landing(workspace / "landing", workspace / "golden.jsonl")
    typer.echo(f"Demo landing zone {workspace / 'landing'}: " +
               ", ".join(f"{drop} ({n} files)" for drop, n in files.items()))
    config_path = write_demo_config(workspace)
    settings = _load_config(config_path)
    result = _run(settings)
    print_result(result, settings)
    typer.echo(f"  config   {config_path}  (rerun: .venv/bin/finegate run -c {config_path})")
    typer.echo(f"Demo finished in {time.perf_counter() - started:.0f} s.")


@app.command()
def queue(config: Path | None = CONFIG_OPTION,
          budget: int | None = typer.Option(None, help="Rows to queue; default queue.budget."),
          push: bool = typer.Option(True, help="Push to label_studio.url when configured."),
          ) -> None:
    """Build the review queue: label issues, uncertain, dense-and-uncertain and disputed rows,
    as Label Studio tasks, JSONL and CSV; pushed to Label Studio when label_studio.url is set."""
    from finegate.core.lake import Lake
    from finegate.tasks.queue import build_queue, champion_scorer, push_queue

    settings = _load_config(config)
    queue_settings = settings.queue if budget is None else settings.queue.model_copy(
        update={"budget": budget})
    lake = Lake.at(settings.lake_path)
    scorer, why = champion_scorer(settings.registry, settings.train)
    typer.echo(f"scoring with {why}" if scorer.model_dir else
               f"{why}: scoring with the TF-IDF stand-in")
    try:
        result = build_queue(lake, settings.labels, queue_settings, scorer)
    except FileNotFoundError as err:
        raise _fail(str(err), 1) from err
    typer.echo(f"queue {result.name}: {result.rows} rows of {result.candidates} candidates "
               f"({', '.join(f'{s} {n}' for s, n in result.by_source.items())})\n"
               f"  ranked by   {result.model}\n  tasks       {result.tasks_path}\n"
               f"  config      {result.label_config_path}\n  jsonl/csv   {result.jsonl_path}"
               f", {result.csv_path}")
    if push and settings.label_studio.url:
        try:
            project, imported = push_queue(lake, result, settings.labels, settings.label_studio)
        except ValueError as err:
            raise _fail(str(err), EXIT_CONFIG) from err
        typer.echo(f"  pushed      {imported} tasks to {settings.label_studio.url} project "
                   f"{project}")


@app.command()
def pull(config: Path | None = CONFIG_OPTION,
         export: Path | None = typer.Option(None, help="A Label Studio JSON export file; "
                                            "default: fetch from label_studio.url.")) -> None:
    """Fetch completed annotations and write them to the landing zone as a review drop."""
    from finegate.core.label_studio import export_annotations, read_export
    from finegate.core.lake import Lake
    from finegate.tasks.pull import pull_annotations

    settings = _load_config(config)
    try:
        tasks, users = ((read_export(export), {}) if export
                        else export_annotations(settings.label_studio))
    except ValueError as err:
        raise _fail(str(err), EXIT_CONFIG) from err
    result = pull_annotations(tasks, settings.landing_path, Lake.at(settings.lake_path), users)
    if result.drop is None:
        typer.echo(f"no new annotations ({result.skipped} tasks without a new vote)")
        return
    typer.echo(f"review drop {result.path}: {result.rows} rows, {result.votes} votes by "
               f"{', '.join(result.annotators)}; the next run ingests it")
