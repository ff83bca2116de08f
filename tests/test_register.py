from pathlib import Path

import pytest

from finegate.tasks.register import code_version


def test_code_version_is_the_git_commit() -> None:
    version = code_version()
    assert version == "unknown" or len(version.split("+")[0]) == 40
    assert code_version(Path("/")) == "unknown"


def test_model_card_names_the_data_the_gate_and_the_training() -> None:
    from finegate.core.results import EvaluationResult, FinetuneResult, SnapshotResult
    from finegate.tasks.register import model_card

    snapshot = SnapshotResult(digest="ab" * 32, path="/lake/s", data_path="/lake/s/data",
                              duplicates_path="/lake/s/dup", rows=120, drops=["day1", "day2"])
    trained = FinetuneResult(model_dir="/m", device="cpu", steps=4, train_rows=96,
                             train_loss=0.5, best_validation_macro_f1=0.8, stopped_early=False,
                             resumed_from=0, seconds=3.0, samples_per_second=10.0,
                             params={"max_length": 32, "bf16": False})
    evaluation = EvaluationResult(accuracy=0.9, macro_f1=0.88, test_rows=12, report_path="/e",
                                  golden_macro_f1=0.85, golden_rows=30)
    card = model_card("finegate-classifier", ["sports", "tech"], snapshot,
                      {"class_balance": 0.99, "duplicate_ratio": 0.02, "noise_ratio": 0.01,
                       "quarantine_ratio": 0.05},
                      {"warnings": ["curated_rows: short texts"]}, trained, evaluation)
    assert card.startswith("# finegate-classifier") and "over sports, tech" in card
    assert snapshot.digest in card and "day1, day2" in card
    assert "passed with 1 warning(s)" in card and "short texts" in card
    assert "golden set: macro-F1 0.850 on 30 rows" in card
    assert "max_length: 32" in card and "registered: 20" in card


def test_a_snapshot_is_trained_again_only_with_other_training_settings(tmp_path: Path) -> None:
    from finegate.core.config import Config, TrainConfig
    from finegate.core.registry import SNAPSHOT_TAG, TRAINING_TAG, client, find_registered

    config = Config(lake_path=str(tmp_path))
    registry = client(config.registry)
    registry.create_registered_model(config.model_name)
    registry.create_model_version(config.model_name, source="file:///tmp/m", tags={
        SNAPSHOT_TAG: "d1", TRAINING_TAG: config.train.digest()})
    found = find_registered(config.registry, "d1", config.train.digest())
    assert found is not None and found.version == "1" and not found.decided
    assert find_registered(config.registry, "d2", config.train.digest()) is None  # new data
    other = TrainConfig(cpu_max_steps=120)  # same data, another budget
    assert other.digest() != config.train.digest()
    assert find_registered(config.registry, "d1", other.digest()) is None


def registration_inputs(root: Path, model_dir: Path):
    """What the register task receives, written by hand: a 6-row snapshot with its manifest,
    scorecard, gate and evaluation reports, and a model folder."""
    import json

    import pandas as pd

    from finegate.core.config import SplitConfig
    from finegate.core.results import EvaluationResult, FinetuneResult, SnapshotResult
    from finegate.tasks.register import RunLineage

    snapshot_dir = root / "snapshot"
    snapshot_dir.mkdir(parents=True)
    pd.DataFrame({"id": list("abcdef"), "text": ["x y z"] * 6, "label": ["sports", "tech"] * 3,
                  "split": ["train"] * 4 + ["test"] * 2, "drop": ["day1"] * 6}
                 ).to_parquet(snapshot_dir / "data.parquet")
    (snapshot_dir / "manifest.json").write_text("{}")
    reports = {"scorecard": {"rows": 6, "class_balance": 1.0, "duplicate_ratio": 0.0,
                             "noise_ratio": 0.0, "quarantine_ratio": 0.0},
               "gate": {"passed": True, "warnings": []},
               "evaluation": {"test": {"truth": ["sports", "tech"],
                                       "predictions": ["sports", "tech"]}}}
    for name, report in reports.items():
        (root / f"{name}.json").write_text(json.dumps(report))
    snapshot = SnapshotResult(digest="cd" * 32, path=str(snapshot_dir),
                              data_path=str(snapshot_dir / "data.parquet"),
                              duplicates_path="", rows=6, drops=["day1"])
    trained = FinetuneResult(model_dir=str(model_dir), device="cpu", steps=1, train_rows=4,
                             train_loss=0.7, best_validation_macro_f1=None, stopped_early=False,
                             resumed_from=0, seconds=1.0, samples_per_second=4.0,
                             params={"max_length": 16})
    evaluation = EvaluationResult(accuracy=1.0, macro_f1=1.0, test_rows=2,
                                  report_path=str(root / "evaluation.json"))
    lineage = RunLineage(run_name="r1", flow_run_id="", landing_path="/landing",
                         labels=["sports", "tech"], split=SplitConfig())
    return (snapshot, str(root / "scorecard.json"), str(root / "gate.json"), trained,
            evaluation), lineage


def test_a_retried_registration_makes_one_version_with_its_card(tmp_path: Path,
                                                                tiny_model_dir: Path,
                                                                monkeypatch) -> None:
    """The first try dies after the version was created (before its model card was written);
    the retry registers nothing new and finishes the card."""
    from finegate.core.config import Config
    from finegate.core.registry import client as registry_client
    from finegate.tasks import register

    config = Config(lake_path=str(tmp_path / "lake"))
    inputs, lineage = registration_inputs(tmp_path, tiny_model_dir)
    real_client = register.client

    class DiesBeforeTheCard:
        def __init__(self, settings) -> None:
            self.client = real_client(settings)

        def __getattr__(self, name: str):
            if name == "update_model_version":
                raise ConnectionError("registry connection lost")
            return getattr(self.client, name)

    monkeypatch.setattr(register, "client", DiesBeforeTheCard)
    with pytest.raises(ConnectionError):
        register.register_model(config.registry, *inputs, train=config.train, lineage=lineage)
    monkeypatch.setattr(register, "client", real_client)
    first = register.register_model(config.registry, *inputs, train=config.train,
                                    lineage=lineage)  # the task's retry
    again = register.register_model(config.registry, *inputs, train=config.train,
                                    lineage=lineage)
    registry = registry_client(config.registry)
    [version] = registry.search_model_versions(f"name='{config.model_name}'")
    assert first.version == again.version == str(version.version) == "1"
    assert registry.get_model_version(config.model_name, "1").description.startswith(
        f"# {config.model_name}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_comes_back_later(tmp_path: Path, monkeypatch):
    """An MLflow server address that refuses connections until ``start()`` is called (it then
    runs a real ``mlflow server`` there until the test ends)."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast: Prefect retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port, processes = free_port(), []
    url = f"http://127.0.0.1:{port}"

    def start() -> None:
        processes.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
             "--artifacts-destination", str(tmp_path / "artifacts")],
            stdout=(tmp_path / "server.log").open("w"), stderr=subprocess.STDOUT,
            env=dict(os.environ)))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()}")

    def stop() -> None:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        processes.clear()

    yield url, start, stop
    stop()


@pytest.mark.usefixtures("prefect_harness")
def test_a_registry_that_is_down_then_back_is_retried_and_read_truthfully(
        mlflow_comes_back_later, tmp_path: Path, monkeypatch) -> None:
    """With the flow's retries on: the first look-up fails (server down), the retry finds the
    server back; then, on that real server, "no champion" is None only when there is none,
    and an outage is an error, never "no champion"."""
    from mlflow.exceptions import MlflowException
    from pydantic import SecretStr

    from finegate.core import registry
    from finegate.core.config import Config
    from finegate.flows.steps import find_trained_model

    url, start, stop = mlflow_comes_back_later
    config = Config(lake_path=str(tmp_path / "lake"), mlflow_tracking_uri=SecretStr(url))
    attempts = []
    real_find = registry.find_registered

    def find_while_the_server_restarts(*args):
        attempts.append("try")
        try:
            return real_find(*args)
        except MlflowException:
            if len(attempts) == 1:
                start()  # back before the task's retry
            raise

    monkeypatch.setattr(registry, "find_registered", find_while_the_server_restarts)
    assert find_trained_model(config.registry, "d1", config.train.digest()) is None
    assert attempts == ["try", "try"]  # failed once, retried, then found no version

    client = registry.client(config.registry)
    name = config.model_name
    assert registry.current_champion(client, name) is None  # no such model yet
    client.create_registered_model(name)
    assert registry.current_champion(client, name) is None  # a model, no champion alias
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.create_model_version(name, source=f"runs:/{run}/model", run_id=run)
    registry.set_champion(client, name, "1")
    assert registry.current_champion(client, name) == "1"
    stop()
    with pytest.raises(MlflowException):  # down: an error, not "no champion"
        registry.current_champion(client, name)
