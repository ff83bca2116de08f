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
