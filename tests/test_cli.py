from pathlib import Path

from typer.testing import CliRunner

from finegate.cli import app


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "run" in result.output and "demo" in result.output


def test_run_with_a_missing_config_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0
    assert "does not exist" in str(result.exception)
