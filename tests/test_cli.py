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
