from pathlib import Path

import pytest

from tasks.register import CHALLENGER, CHAMPION, code_version, promote_if_first


@pytest.fixture
def registry(tmp_path: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                          registry_uri=f"sqlite:///{tmp_path}/mlflow.db")
    client.create_registered_model("m")
    return client


def test_first_version_becomes_champion_later_ones_only_challenger(registry) -> None:
    first = registry.create_model_version("m", source="file:///tmp/m1").version
    second = registry.create_model_version("m", source="file:///tmp/m2").version
    assert promote_if_first(registry, "m", first) == [CHALLENGER, CHAMPION]
    assert promote_if_first(registry, "m", second) == [CHALLENGER]
    assert registry.get_model_version_by_alias("m", CHAMPION).version == first
    assert registry.get_model_version_by_alias("m", CHALLENGER).version == second


def test_code_version_is_the_git_commit() -> None:
    version = code_version()
    assert version == "unknown" or len(version.split("+")[0]) == 40
    assert code_version(Path("/")) == "unknown"
