import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finegate.cli import app
from finegate.core.config import load_config


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "run" in result.output and "demo" in result.output


def test_run_with_a_missing_config_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 3
    assert "missing.yaml does not exist" in result.output and "Traceback" not in result.output


def test_a_broken_suite_stops_the_run_before_any_work(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from finegate.core.config import PROJECT_ROOT
    from finegate.flows import nightly

    suites = tmp_path / "expectations"
    shutil.copytree(PROJECT_ROOT / "expectations", suites)
    text = (suites / "curated_rows.json").read_text()
    (suites / "curated_rows.json").write_text(text[:len(text) // 3])  # truncated mid-file
    (tmp_path / "landing").mkdir()
    config = tmp_path / "finegate.yaml"
    config.write_text(f"landing_path: {tmp_path / 'landing'}\nlake_path: {tmp_path / 'lake'}\n"
                      f"expectations_path: {suites}\n")

    def never(*_: object) -> None:
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(nightly, "run_nightly", never)
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 3, result.output
    assert re.search(r"curated_rows.json is not valid JSON: .* at line \d+, column \d+",
                     result.output)
    assert "Traceback" not in result.output and not (tmp_path / "lake").exists()
    with pytest.raises(nightly.PreflightError, match="curated_rows.json"):
        nightly.nightly.fn(load_config(config))  # the flow itself checks first, too


def test_a_stopped_run_exits_with_code_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from finegate.core.lake import LakeBusy
    from finegate.flows import nightly

    (tmp_path / "landing").mkdir()
    config = tmp_path / "finegate.yaml"
    config.write_text(f"landing_path: {tmp_path / 'landing'}\nlake_path: {tmp_path / 'lake'}\n")

    def busy(*_: object) -> None:
        raise LakeBusy("another Finegate run holds the lock of the lake")

    monkeypatch.setattr(nightly, "run_nightly", busy)
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 2 and "holds the lock" in result.output


def test_promote_and_rollback_by_hand(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    config = tmp_path / "finegate.yaml"
    config.write_text(f"lake_path: {tmp_path / 'lake'}\n")
    uri = f"sqlite:///{(tmp_path / 'lake').resolve()}/mlflow.db"
    (tmp_path / "lake").mkdir()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("finegate-classifier")
    for i in range(2):
        client.create_model_version("finegate-classifier", source=f"file:///tmp/m{i}")
    runner = CliRunner()
    for version in ("1", "2", "2"):  # promoting the champion again changes nothing
        result = runner.invoke(app, ["promote", "--version", version, "-c", str(config)])
        assert result.exit_code == 0, result.output
    assert "now version 2" in result.output
    missing = runner.invoke(app, ["promote", "--version", "9", "-c", str(config)])
    assert missing.exit_code == 1 and "has no version 9" in missing.output

    result = runner.invoke(app, ["rollback", "-c", str(config)])
    assert result.exit_code == 0 and "back to version 1" in result.output
    assert str(client.get_model_version_by_alias("finegate-classifier", "champion").version) == "1"
    demoted = client.get_model_version("finegate-classifier", "2")
    assert demoted.tags["finegate.promotion"].startswith("rolled back")
    again = runner.invoke(app, ["rollback", "-c", str(config)])
    assert again.exit_code == 1 and "no earlier champion" in again.output


# --- operator errors: one paragraph, no traceback, a documented exit code ---------------------

def one_paragraph(output: str) -> str:
    """The error's text, checked to be one paragraph without a traceback."""
    text = output.strip()
    assert "\n" not in text and "Traceback" not in text, output
    return text


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "finegate.yaml"
    path.write_text(f"landing_path: {tmp_path / 'landing'}\nlake_path: {tmp_path / 'lake'}\n"
                    + text)
    (tmp_path / "landing").mkdir(exist_ok=True)
    return path


def never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from finegate.flows import nightly

    def never(*_: object) -> None:
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(nightly, "run_nightly", never)


def test_a_misspelt_key_names_file_line_and_the_key_it_meant(tmp_path: Path) -> None:
    config = config_file(tmp_path, "train:\n  max_length: 64\n  cpu_max_step: 10\n")
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 3
    assert one_paragraph(result.output) == (
        "Finegate did not start: the configuration is not valid. "
        f"{config}, line 5: train.cpu_max_step is not a setting (did you mean "
        "train.cpu_max_steps?). The settings are listed in the configuration section of "
        "README.md (each one, with its default, in finegate/core/config.py).")
    assert not (tmp_path / "lake").exists()


def test_a_misspelt_variable_and_a_key_with_no_near_match(tmp_path: Path) -> None:
    config = config_file(tmp_path, "dask:\n  zzz: 1\n")
    result = CliRunner().invoke(app, ["run", "-c", str(config)],
                                env={"FINEGATE_TRAIN__CPU_MAX_STEP": "10"})
    assert result.exit_code == 3
    text = one_paragraph(result.output)
    assert "the variable FINEGATE_TRAIN__CPU_MAX_STEP: train.cpu_max_step is not a setting " \
           "(did you mean train.cpu_max_steps?)" in text
    assert f"{config}, line 4: dask.zzz is not a setting (the keys under dask are n_workers, " \
           "scheduler_address, threads_per_worker, txt_files_per_partition)" in text


def test_a_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    config = config_file(tmp_path, "labels: [a, b\n")
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 3
    text = one_paragraph(result.output)
    assert f"The config file {config} is not valid YAML: expected ',' or ']'" in text
    assert "(while parsing a flow sequence started at line 3, column 9)" in text


def test_a_value_of_the_wrong_type_says_what_the_key_takes(tmp_path: Path) -> None:
    config = config_file(tmp_path, "train:\n  max_steps: lots\n")
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 3
    assert f"{config}, line 4: train.max_steps is 'lots', but it takes an integer (default " \
           "0): Input should be a valid integer" in one_paragraph(result.output)
    section = config_file(tmp_path, "train: 5\n")
    result = CliRunner().invoke(app, ["run", "-c", str(section)])
    assert "line 3: the section train must be a mapping of keys to values (key: value lines), " \
           "not int" in one_paragraph(result.output)


def test_an_unreadable_config_file(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfelake_path: x\n")
    result = CliRunner().invoke(app, ["run", "-c", str(binary)])
    assert result.exit_code == 3
    assert f"The config file {binary} is not UTF-8 text" in one_paragraph(result.output)
    result = CliRunner().invoke(app, ["status", "-c", str(tmp_path)])
    assert result.exit_code == 3
    assert f"config file {tmp_path} is a folder, not a file" in one_paragraph(result.output)


def test_paths_and_services_are_checked_before_any_server_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    never_run(monkeypatch)
    (tmp_path / "afile").write_text("")
    config = tmp_path / "finegate.yaml"
    config.write_text(f"landing_path: {tmp_path / 'nowhere'}\n"
                      f"lake_path: {tmp_path / 'afile' / 'lake'}\n"
                      f"evaluation:\n  golden_path: {tmp_path / 'golden.jsonl'}\n"
                      "mlflow_tracking_uri: http://127.0.0.1:9\n")
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 3
    text = one_paragraph(result.output)
    assert text.startswith(f"Finegate did not start the run: landing zone {tmp_path / 'nowhere'}"
                           " does not exist; set landing_path")
    assert f"evaluation.golden_path {tmp_path / 'golden.jsonl'} is not a file" in text
    assert f"lake_path {tmp_path / 'afile' / 'lake'} cannot be created: {tmp_path / 'afile'} " \
           "is a file" in text
    assert "the MLflow tracking server http://127.0.0.1:9 is not reachable: nothing answers " \
           "at 127.0.0.1:9" in text
    assert text.endswith("Nothing was written to the lake; fix it and run again.")
    promote = CliRunner().invoke(app, ["promote", "--version", "1", "-c", str(config)])
    assert promote.exit_code == 3 and "is not reachable" in one_paragraph(promote.output)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = config_file(tmp_path, "train:\n  cpu_max_step: 10\n")
    result = CliRunner().invoke(app, ["--debug", "run", "-c", str(config)])
    assert result.exit_code == 3
    assert "Traceback" in result.output and "extra_forbidden" in result.output
    assert "did you mean train.cpu_max_steps?" in result.output


def test_an_unexpected_error_is_one_paragraph_with_code_1(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from finegate.flows import nightly

    def broken(*_: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(nightly, "run_nightly", broken)
    config = config_file(tmp_path, "")
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 1
    assert one_paragraph(result.output).startswith(
        "Finegate failed with an unexpected error: KeyError: 'a bug'. ")
    assert "Rerun with --debug for the traceback" in result.output
    debug = CliRunner().invoke(app, ["--debug", "run", "-c", str(config)])
    assert debug.exit_code == 1 and "Traceback" in debug.output and "in broken" in debug.output


def test_a_service_lost_during_the_run_is_one_paragraph(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    from finegate.flows import nightly

    def lost(*_: object) -> None:
        raise MlflowException("API request to http://127.0.0.1:5000/api failed:\nrefused")

    monkeypatch.setattr(nightly, "run_nightly", lost)
    result = CliRunner().invoke(app, ["run", "-c", str(config_file(tmp_path, ""))])
    assert result.exit_code == 1
    assert one_paragraph(result.output).startswith(
        "Finegate stopped: a service did not answer (MlflowException: API request to "
        "http://127.0.0.1:5000/api failed: refused). Check that the MLflow tracking server")


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 3
    assert f"{tmp_path} is not a run folder (it has no run.json)" in one_paragraph(result.output)


def test_the_installed_command_prints_no_rich_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = config_file(tmp_path, "train:\n  cpu_max_step: 10\n")
    command = [sys.executable, "-c", "from finegate.cli import entry; entry()"]  # the script
    done = subprocess.run([*command, "run", "-c", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3 and done.stdout == ""
    assert "did you mean train.cpu_max_steps?" in one_paragraph(done.stderr)
    # a wrong command line is an operator error too: 3, not click's 2 (= stopped on purpose)
    for wrong in (["run", "--no-such-option"], ["status", "--last"], ["frobnicate"]):
        done = subprocess.run([*command, *wrong], capture_output=True, text=True, timeout=120)
        assert done.returncode == 3 and "Traceback" not in done.stderr, (wrong, done.stderr)
        assert "Error:" in done.stderr


def test_status_of_an_empty_lake_is_one_line(tmp_path: Path) -> None:
    config = config_file(tmp_path, "")
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0
    assert one_paragraph(result.output) == (
        f"No nights yet: the lake {tmp_path / 'lake'} has no runs (a run appears here once it "
        "reaches the quality gate; start one with `finegate run`).")
    assert not (tmp_path / "lake").exists()  # status only reads
    as_json = CliRunner().invoke(app, ["status", "-c", str(config), "--json"])
    assert json.loads(as_json.output)["nights"] == []


def test_status_shows_a_night_still_running(tmp_path: Path) -> None:
    import os

    from finegate.core.lake import write_json

    config = config_file(tmp_path, "")
    run = tmp_path / "lake" / "runs" / "20261129T020000Z-busy-night"
    write_json(run / "gate.json", {"passed": True, "failures": [],
                                   "warnings": ["label [bold]x[/bold] :smile: is rare"]})
    (tmp_path / "lake" / ".lock").write_text(f"pid {os.getpid()} since 2026-11-29T02:00:00")
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "busy-night: running now (pid" in result.output
    assert "warning: label [bold]x[/bold] :smile: is rare" in result.output  # shown as written
    assert "no MLflow database" in result.output  # and status did not create one
    assert not (tmp_path / "lake" / "mlflow.db").exists()
    (tmp_path / "lake" / ".lock").write_text("")  # the run ended without its report
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert "busy-night: did not finish" in result.output


def test_a_deployment_with_a_misspelt_key_fails_with_the_same_paragraph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from finegate.flows import nightly

    config = config_file(tmp_path, "train:\n  cpu_max_step: 10\n")
    monkeypatch.setenv("FINEGATE_CONFIG", str(config))  # how a deployment's worker runs it
    with pytest.raises(nightly.PreflightError) as stopped:
        nightly.nightly.fn()
    assert str(stopped.value).startswith(f"Finegate did not start: the configuration is not "
                                         f"valid. {config}, line 4: train.cpu_max_step is not "
                                         "a setting (did you mean train.cpu_max_steps?).")
