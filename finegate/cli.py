"""The ``finegate`` command line: run the nightly flow, or the demo."""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from finegate.core.config import Config, config_error_message, load_config

# Prefect's temporary server gives itself 20 s to start; a first start (database migrations) on
# a small machine takes longer. Its telemetry heartbeat is off, as in the Makefile (no network
# beyond package registries; it also raced the server's SQLite file: "database is locked").
# Set before Prefect is imported, which reads its settings then; the environment still wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

if TYPE_CHECKING:
    from finegate.flows.nightly import NightlyResult

# Tracebacks never show local variables (a config holds secrets), and only with --debug.
app = typer.Typer(help="Finegate: data-quality-gated fine-tuning, run as a nightly flow.",
                  no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)

CONFIG_OPTION = typer.Option(None, "--config", "-c", envvar="FINEGATE_CONFIG",
                             help="YAML config; FINEGATE_* variables override it.")


# Exit codes (README, Troubleshooting): 0 the run finished; 1 an unexpected error, or a
# service failing during the run; 2 the run was stopped on purpose: quality gate, accounting,
# or the lake busy with another run; 3 the configuration, a path or service it names, or an
# expectation suite is wrong (found before any work starts). Errors are one paragraph; the
# traceback only with --debug (or FINEGATE_DEBUG=1).
EXIT_UNEXPECTED, EXIT_STOPPED, EXIT_CONFIG = 1, 2, 3
_debug = {"on": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", envvar="FINEGATE_DEBUG",
                                    help="On an error, print the traceback too.")) -> None:
    """Finegate: data-quality-gated fine-tuning, run as a nightly flow."""
    _debug["on"] = debug


def _operator_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every command's errors as one paragraph and a documented exit code; with --debug the
    traceback too."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit as stop:
            if _debug["on"] and stop.__cause__ is not None:
                traceback.print_exception(stop.__cause__, file=sys.stderr)
            raise
        except Exception as err:  # noqa: BLE001 - the operator gets a paragraph, not a trace
            if _debug["on"]:
                traceback.print_exception(err, file=sys.stderr)
            raise _fail(_unexpected_message(err), EXIT_UNEXPECTED) from err

    return wrapper


def _unexpected_message(err: BaseException) -> str:
    text = " ".join(str(err).split())
    text = text if len(text) <= 600 else text[:600] + " …"
    if _is_service_error(err):
        return (f"Finegate stopped: a service did not answer ({type(err).__name__}: {text}). "
                "Check that the MLflow tracking server (mlflow_tracking_uri), the Dask "
                "scheduler (dask.scheduler_address) and the Prefect API (PREFECT_API_URL) are "
                "up. The lake keeps what was built; the next run continues from it. Rerun with "
                "--debug for the traceback.")
    return (f"Finegate failed with an unexpected error: {type(err).__name__}: {text}. The lake "
            "keeps what was built; the next run continues from it. Rerun with --debug for the "
            "traceback, and report it if the cause is not yours.")


def _is_service_error(err: BaseException) -> bool:
    names = {cls.__module__.split(".")[0] + "." + cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"mlflow.MlflowException", "requests.ConnectionError",
                         "httpx.ConnectError", "builtins.ConnectionError",
                         "distributed.CommClosedError"})


def _command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` with :func:`_operator_errors` around the command."""
    def register(command: Callable[..., Any]) -> Callable[..., Any]:
        return app.command(*args, **kwargs)(_operator_errors(command))

    return register


def _load_config(path: Path | None) -> Config:
    """The config, or a one-paragraph error (file, line, key path, did-you-mean) and exit
    code 3."""
    import yaml
    from pydantic import ValidationError

    try:
        return load_config(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError, ValueError) as err:
        raise _fail(config_error_message(err, path), EXIT_CONFIG) from err


def _fail(message: str, code: int) -> typer.Exit:
    """Print a one-paragraph error; the exit (with ``code``) for the caller to raise."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=code)


def _prefect_api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or "")


def _preflight(config: Config) -> None:
    """Check the config, its paths and services and every expectation suite before Prefect's
    server starts; every problem in one paragraph, exit code 3."""
    from finegate.core.checks import lake_problems, service_problems
    from finegate.flows.nightly import PreflightError, preflight

    problems = lake_problems(config) + service_problems(config, _prefect_api_url())
    try:
        preflight(config)
    except PreflightError as err:
        message = ". Also: ".join([str(err).rstrip("."), *problems])
    else:
        if not problems:
            return
        message = "Finegate did not start the run: " + ". Also: ".join(problems)
    raise _fail(message.rstrip(".") + ". Nothing was written to the lake; fix it and run again.",
                EXIT_CONFIG)


def _check_registry(config: Config) -> None:
    """A registry that does not answer: one paragraph and exit code 3, at once (MLflow's own
    client retries for minutes)."""
    from finegate.core.checks import service_problems

    problems = [p for p in service_problems(config) if "MLflow" in p]
    if problems:
        raise _fail(f"Finegate did not start: {problems[0]}.", EXIT_CONFIG)


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


@_command()
def run(config: Path | None = CONFIG_OPTION) -> None:
    """Run the nightly flow once: ingest, clean, dedup, gate, fine-tune, register."""
    settings = _load_config(config)
    print_result(_run(settings), settings)


@_command()
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


@_command()
def promote(version: str = typer.Option(..., help="Model version to make champion."),
            config: Path | None = CONFIG_OPTION) -> None:
    """Make a model version the champion by hand (recorded in the champion history)."""
    from mlflow.exceptions import MlflowException

    from finegate.core.registry import PROMOTION_TAG, client, set_champion

    settings = _load_config(config)
    _check_registry(settings)
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


@_command()
def rollback(config: Path | None = CONFIG_OPTION) -> None:
    """Give the champion alias back to the previous champion."""
    from finegate.core.registry import client, rollback_champion

    settings = _load_config(config)
    _check_registry(settings)
    try:
        version = rollback_champion(client(settings.registry), settings.model_name)
    except ValueError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from err
    typer.echo(f"models:/{settings.model_name}@champion is back to version {version}")


@_command()
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


@_command()
def status(config: Path | None = CONFIG_OPTION,
           last: int = typer.Option(7, "--last", "-n", min=1, help="How many nights."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead.")) -> None:
    """The last nights at a glance: drops, rows, gate, snapshot, model, promotion."""
    import json

    from finegate.core.status import lake_status

    settings = _load_config(config)
    state = lake_status(settings.lake_path, settings.registry, last)
    if as_json:
        typer.echo(json.dumps(state.to_json(), indent=2))
    elif not state.nights:
        typer.echo(f"No nights yet: the lake {state.lake} has no runs (a run appears here once "
                   "it reaches the quality gate; start one with `finegate run`).")
    else:
        print_status(state)


def print_status(state: Any) -> None:
    """The status as a table, with the registry line and the gate's failures and warnings."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # user data (labels, gate messages) is shown as written: no Rich markup or emoji codes
    console = Console(width=None if sys.stdout.isatty() else 160, highlight=False,
                      markup=False, emoji=False)
    shown = f"the last {len(state.nights)} of {state.runs_total}" \
        if state.runs_total > len(state.nights) else f"{state.runs_total}"
    console.print(f"Finegate status: lake {state.lake}, {shown} night(s), newest first")
    if state.registry_error and state.registry_error.startswith("no MLflow database"):
        console.print(f"Registry {state.registry}: no model registered yet "
                      f"({state.registry_error}).")
    elif state.registry_error:
        console.print(f"Registry {state.registry}: NOT READ ({state.registry_error}); model "
                      "versions below are from the lake, promotion and champion unknown.")
    else:
        history = ", ".join(state.champion_history) or "none"
        console.print(f"Registry {state.registry}: champion {state.model_name} version "
                      f"{state.champion or 'none'} (champion history: {history})")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("night (UTC)", "run", "drops", "read → curated", "gate", "snapshot",
                   "model", "champion", "promotion"):
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         max_width=30 if column == "drops" else None)
    notes = []
    for number, night in enumerate(state.nights):
        warnings = f" ({len(night.warnings)} warning{'s' if len(night.warnings) > 1 else ''})" \
            if night.warnings else ""
        gate = {"passed": "passed", "failed": "FAILED"}.get(night.gate, night.gate)
        drops = "?" if night.drops is None else ", ".join(night.drops) or "none new"
        rows = "?" if night.rows_read is None else f"{night.rows_read} → {night.curated}"
        model = "-" if night.model_version is None else f"v{night.model_version}" + (
            " (trained)" if night.trained else " (reused)")
        champion = "?" if state.registry_error and night.model_version else \
            {True: "yes", False: "no", None: "-"}[night.champion]
        promotion = night.promotion or ("?" if state.registry_error and night.model_version
                                        else "-")
        started = (night.started or "")[:16].replace("T", " ")
        table.add_row(started, night.run.split("-", 1)[-1], drops, rows, gate + warnings,
                      (night.snapshot or "?")[:12], model, champion, promotion)
        if night.gate == "failed":
            notes.append(f"{night.run}: gate failed: {night.gate_reason}")
        notes += [f"{night.run}: warning: {w if len(w) < 150 else w[:150].rstrip() + ' …'}"
                  for w in night.warnings]
        if not night.finished and number == 0 and state.running:
            notes.append(f"{night.run}: running now ({state.running})")
        elif not night.finished:
            notes.append(f"{night.run}: did not finish (no report; see its flow run in Prefect)")
    console.print(table)
    for note in notes:
        console.print(f"  {note}", soft_wrap=True)


RUN_DIR_ARGUMENT = typer.Argument(..., help="A run folder: <lake>/runs/<run>")


@_command("report")
def report_command(run_dir: Path = RUN_DIR_ARGUMENT) -> None:
    """Re-render the HTML quality report of a finished run."""
    from finegate.tasks.report import read_report_inputs, render_report

    if not (run_dir / "run.json").is_file():
        raise _fail(f"Finegate did not re-render: {run_dir} is not a run folder (it has no "
                    "run.json). Pass a folder <lake>/runs/<run>; `finegate status` lists the "
                    "last runs.", EXIT_CONFIG)
    path = render_report(read_report_inputs(run_dir), run_dir / "report.html")
    typer.echo(f"report: {path}")


WORKSPACE_OPTION = typer.Option(Path("demo-workspace"),
                                help="Folder for the demo landing zone and lake.")


@_command()
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


@_command()
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


@_command()
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


def entry() -> None:
    """The installed ``finegate`` command. A wrong command line (an unknown option, a missing
    argument) exits 3, the code of every other operator error, instead of click's 2, which
    Finegate reserves for a run stopped on purpose (a scheduler must tell them apart)."""
    try:  # typer >= 0.20 ships its own copy of click
        from typer._click.exceptions import UsageError
    except ImportError:
        from click.exceptions import UsageError

    try:
        code = app(standalone_mode=False)
    except UsageError as err:
        err.show()
        sys.exit(EXIT_CONFIG)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(EXIT_UNEXPECTED)
    sys.exit(code if isinstance(code, int) else 0)
