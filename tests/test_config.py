from pathlib import Path

import pytest
from pydantic import ValidationError

from finegate.core.config import load_config


def test_yaml_then_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "finegate.yaml"
    path.write_text("lake_path: /data/lake\ntrain:\n  cpu_max_steps: 10\n")
    config = load_config(path, env={
        "FINEGATE_TRAIN__CPU_MAX_STEPS": "25",
        "FINEGATE_LABELS": "[a, b]",
        "FINEGATE_DASK__SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786",
        "OTHER": "ignored",
    })
    assert config.lake_path == "/data/lake"
    assert config.train.cpu_max_steps == 25
    assert config.labels == ["a", "b"]
    assert config.dask.scheduler_address == "tcp://10.0.0.1:8786"


def test_default_tracking_uri_is_sqlite_in_the_lake(tmp_path: Path) -> None:
    config = load_config(env={"FINEGATE_LAKE_PATH": str(tmp_path)})
    assert config.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_split_shares_must_add_up() -> None:
    with pytest.raises(ValidationError, match="add up to 1"):
        load_config(env={"FINEGATE_SPLIT__TEST": "0.5"})


def test_missing_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


def test_secret_uri_is_redacted_and_hidden_from_dumps() -> None:
    config = load_config(env={"FINEGATE_MLFLOW_TRACKING_URI": "https://bob:tok3n@ml.example:443"})
    assert config.tracking_uri() == "https://bob:tok3n@ml.example:443"
    assert config.public_tracking_uri() == "https://bob:***@ml.example:443"
    assert "tok3n" not in config.model_dump_json() and "tok3n" not in repr(config)


def test_credentials_move_out_of_the_uri_mlflow_sees(monkeypatch) -> None:
    import os

    from finegate.core.registry import mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    config = load_config(env={"FINEGATE_MLFLOW_TRACKING_URI": "https://bob:tok3n@ml.example:8443"})
    assert mlflow_uri(config.registry) == "https://ml.example:8443"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "tok3n"
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")


def test_every_credential_form_is_redacted() -> None:
    from finegate.core.config import redact_uri

    assert redact_uri("https://t0ken-abc@ml.example/x") == "https://***@ml.example/x"
    assert redact_uri("https://ml.example/?api_token=t0k&x=1&sig=s1g") == \
        "https://ml.example/?api_token=***&x=1&sig=***"
    assert redact_uri("sqlite:////data/lake/mlflow.db") == "sqlite:////data/lake/mlflow.db"


def test_a_bare_token_in_the_uri_becomes_mlflows_token_variable(monkeypatch) -> None:
    import os

    from finegate.core.registry import mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    config = load_config(env={"FINEGATE_MLFLOW_TRACKING_URI": "https://t0ken-abc@ml.example"})
    assert mlflow_uri(config.registry) == "https://ml.example"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "t0ken-abc"
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")


def test_a_misspelt_setting_is_an_error_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "finegate.yaml"
    path.write_text("train:\n  cpu_max_step: 10\n")  # the key is cpu_max_steps
    with pytest.raises(ValidationError, match="cpu_max_step"):
        load_config(path, env={})
    with pytest.raises(ValidationError, match="lake_pth"):
        load_config(env={"FINEGATE_LAKE_PTH": "/data"})


def test_the_readme_config_example_is_a_valid_config() -> None:
    """The YAML block under README's "Configuration" lists real keys with their defaults:
    a key renamed or misplaced in the code (or the README) fails here."""
    import yaml

    from finegate.core.config import Config

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("### Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    example = yaml.safe_load(block)
    config = Config.model_validate(example)
    assert config.train.augment.upsample_to == 0.0 and config.split.strategy == "hash"
    assert set(example) >= {"train", "split", "dedup", "label_quality", "filters", "annotators",
                            "queue", "label_studio", "evaluation", "promotion", "dask"}
