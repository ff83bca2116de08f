"""End to end: the real flow on Prefect's test harness, Dask, a file GX context and MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from finegate.core.config import Config, DaskConfig
from finegate.core.results import Accounting
from finegate.core.status import lake_status
from finegate.flows.nightly import NightlyResult, run_nightly
from finegate.tasks.validate import QualityGateFailed
from tests.factories import (
    PLANTED_QUARANTINE,
    make_small_config,
    topic_rows,
    write_dirty_landing,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


@dataclass(frozen=True)
class Nights:
    """Four nights of one lake: the first delivery (on a 4-step budget, a model that predicts
    one class), nothing new, a new drop trained on a budget that learns the topics (a better
    challenger), then the same snapshot on the 4-step budget again (a worse challenger)."""

    config: Config
    first: NightlyResult
    second: NightlyResult
    versions_after_second: int  # model versions in the registry after night two
    third: NightlyResult
    fourth: NightlyResult


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Nights:
    root = tmp_path_factory.mktemp("nights")
    landing = root / "landing"
    write_dirty_landing(landing)
    config = make_small_config(root, landing, tiny_model_dir)
    first = run_nightly(config)
    second = run_nightly(config)
    versions = len(registry(config).search_model_versions(f"name='{config.model_name}'"))
    write_new_drop(landing / "day3")
    third = run_nightly(with_a_learning_budget(config))
    return Nights(config, first, second, versions, third, run_nightly(config))


def with_a_learning_budget(config: Config) -> Config:
    """300 steps at a high learning rate, no early stop: the tiny BERT learns the topics (golden
    macro-F1 1.0 for each of 3 random initialisations tried; 40 or 150 steps were not enough),
    where the 4-step budget only ever predicts one class."""
    return config.model_copy(update={"train": config.train.model_copy(update={
        "cpu_max_steps": 300, "cpu_learning_rate": 3e-3, "epochs": 40, "patience": 100})})


def registry(config: Config):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=config.tracking_uri(), registry_uri=config.tracking_uri())


def test_night_one_curates_every_row_and_quarantines_the_planted_junk(nights: Nights) -> None:
    result = nights.first
    assert result.accounting == Accounting(rows_read=129, curated=120, quarantined=7,
                                           duplicates=2)
    scorecard = json.loads(Path(result.scorecard_path).read_text())
    assert scorecard["accounting"]["holds"] is True
    quarantine = Path(nights.config.lake_path) / "quarantine"
    reasons = [r for f in quarantine.glob("day[12]/*/*.parquet")
               for r in pq.read_table(f).column("reason").to_pylist()]
    for reason, count in PLANTED_QUARANTINE.items():
        assert sum(r.startswith(reason) for r in reasons) == count, reason


def test_night_one_registers_the_first_champion_with_its_lineage(nights: Nights) -> None:
    result, config = nights.first, nights.config
    client = registry(config)
    registered = result.registered
    assert registered.aliases == ["challenger", "champion"]
    champion = client.get_model_version(config.model_name, registered.version)
    assert champion.run_id == registered.run_id
    run = client.get_run(registered.run_id)
    assert run.data.tags["finegate.snapshot_digest"] == result.snapshot.digest
    assert run.data.tags["finegate.flow_run_id"]
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.digest == result.snapshot.digest[:32]
    assert dataset.dataset.source and result.snapshot.data_path in dataset.dataset.source
    assert "test_macro_f1" in run.data.metrics and "golden_macro_f1" in run.data.metrics
    assert champion.tags["finegate.promotion"] == "promoted to champion"
    assert "first model" in champion.tags["finegate.promotion.reasons"]
    assert "# finegate-classifier" in champion.description
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "quality")}
    assert {"scorecard.json", "gate.json", "evaluation.json"} <= artifacts
    assert client.list_artifacts(run.info.run_id, "data_docs")


def test_night_two_with_nothing_new_neither_reads_nor_trains(nights: Nights) -> None:
    second = nights.second
    assert second.drops_ingested == [] and not second.trained
    assert second.snapshot.digest == nights.first.snapshot.digest
    assert second.registered.version == nights.first.registered.version
    assert nights.versions_after_second == 1


def test_night_three_reads_only_the_new_drop_and_a_better_challenger_becomes_champion(
        nights: Nights) -> None:
    first, third, config = nights.first, nights.third, nights.config
    client = registry(config)
    assert third.drops_ingested == ["day3"] and third.trained
    assert third.accounting.rows_read == 129 + 12 and third.accounting.holds
    assert third.snapshot.rows == first.snapshot.rows + 12
    assert third.registered.version == "2"
    assert third.registered.aliases == ["challenger", "champion"]
    decided = client.get_model_version(config.model_name, "2").tags
    assert decided["finegate.promotion"] == "promoted to champion"
    assert decided["finegate.promotion.set"] == "golden"
    assert float(decided["finegate.promotion.challenger_macro_f1"]) > 0.9
    assert float(decided["finegate.promotion.champion_macro_f1"]) < 0.5
    history = json.loads((Path(config.lake_path) / "curated" / "history.json").read_text())
    assert [h["snapshot"] for h in history] == [first.snapshot.digest, third.snapshot.digest]
    drift = json.loads(Path(third.scorecard_path).read_text())["drift"]
    assert drift["new_rows"] == 12 and drift["new_drop"] == "day3"


def test_night_four_a_worse_challenger_stays_challenger(nights: Nights) -> None:
    fourth, config = nights.fourth, nights.config
    client = registry(config)
    assert fourth.drops_ingested == [] and fourth.trained  # same data, another budget
    assert fourth.snapshot.digest == nights.third.snapshot.digest
    assert fourth.registered.version == "3" and fourth.registered.aliases == ["challenger"]
    assert str(client.get_model_version_by_alias(config.model_name, "champion").version) == "2"
    decided = client.get_model_version(config.model_name, "3").tags
    assert decided["finegate.promotion"] == "champion stays 2"
    assert "recall below the floor" in decided["finegate.promotion.reasons"]
    assert client.get_registered_model(config.model_name).tags[
        "finegate.champion_history"] == "1,2"


PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt"}


def pickled(path: Path) -> bool:
    """Whether a file holds pickled objects: a pickle stream (protocol 2+ starts with 0x80) or
    a torch.save zip archive (which carries a data.pkl)."""
    import zipfile

    head = path.read_bytes()[:2]
    if head[:1] == b"\x80":
        return True
    if head == b"PK" and zipfile.is_zipfile(path):
        return any(n.endswith(".pkl") for n in zipfile.ZipFile(path).namelist())
    return False


def test_no_pickles_are_shipped_with_the_registered_model(nights: Nights,
                                                          tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts
    from safetensors import safe_open

    config, version = nights.config, nights.first.registered
    client = registry(config)
    model = Path(download_artifacts(artifact_uri=f"models:/{config.model_name}/"
                                    f"{version.version}", dst_path=str(tmp_path / "model"),
                                    tracking_uri=config.tracking_uri()))
    run = Path(download_artifacts(run_id=version.run_id, artifact_path="",
                                  dst_path=str(tmp_path / "run"),
                                  tracking_uri=config.tracking_uri()))
    files = [p for root in (model, run) for p in root.rglob("*") if p.is_file()]
    [weights] = [p for p in files if p.suffix == ".safetensors"]
    with safe_open(weights, "pt") as tensors:  # a real safetensors file, with the classifier
        assert "classifier.weight" in set(tensors.keys())
    assert [p for p in files if p.suffix in PICKLE_SUFFIXES
            or (p.suffix != ".safetensors" and pickled(p))] == []
    assert client.get_model_version(config.model_name, version.version).source


def write_new_drop(folder: Path) -> None:
    """Twelve new, distinct rows in a new drop."""
    folder.mkdir(parents=True)
    rows = topic_rows(12, seed=42, prefix="d3")
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


FLOW_WITH_A_SLOW_TRAINING = """
import sys, time
from finegate.core.config import load_config
from finegate.flows.nightly import run_nightly
from finegate.tasks import finetune

real_step = finetune.train_step

def slow_step(*args, **kwargs):  # leaves time to kill the process between two checkpoints
    time.sleep(0.5)
    return real_step(*args, **kwargs)

finetune.train_step = slow_step
run_nightly(load_config(sys.argv[1]))
"""


def test_a_run_killed_during_training_resumes_from_its_checkpoint(small_config: Config,
                                                                 tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The flow runs in its own process, which gets a SIGKILL (with its Dask workers) as soon
    as training wrote a checkpoint; the next run reads no drop and goes on from it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml
    from prefect.settings import PREFECT_API_URL

    from finegate.tasks import finetune as finetune_module

    config = small_config.model_copy(update={"train": small_config.train.model_copy(
        update={"checkpoint_every": 2, "cpu_max_steps": 12, "epochs": 2})})
    config_file = tmp_path / "finegate.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(
        mode="json", exclude={"mlflow_tracking_uri"})))
    lake = Path(config.lake_path)
    flow = subprocess.Popen([sys.executable, "-c", FLOW_WITH_A_SLOW_TRAINING, str(config_file)],
                            env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                            stdout=(tmp_path / "killed.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(lake.glob("models/*/checkpoint/state.pt")):
        assert flow.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.1)
    os.killpg(flow.pid, signal.SIGKILL)  # the flow process and its Dask workers: no cleanup
    assert flow.wait(timeout=60) == -signal.SIGKILL
    [model_dir] = list((lake / "models").iterdir())
    assert not (model_dir / "model.safetensors").exists()  # killed before the model was saved
    ledger = json.loads((lake / "ledger.json").read_text())
    assert sorted(ledger["drops"]) == ["day1", "day2"]  # the data work is kept

    real, results = finetune_module.train, []

    def recorded(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(finetune_module, "train", recorded)
    resumed = run_nightly(config)
    assert resumed.drops_ingested == [] and resumed.trained  # nothing re-ingested
    [trained] = results
    assert 0 < trained.resumed_from < 12 and trained.resumed_from % 2 == 0  # from a checkpoint
    assert trained.steps == 12
    assert resumed.accounting == Accounting(rows_read=129, curated=120, quarantined=7,
                                            duplicates=2)
    assert resumed.registered.version == "1"


def test_failing_gate_stops_before_training(small_config: Config, tmp_path: Path) -> None:
    from distributed import LocalCluster
    from mlflow import MlflowClient

    # Two configured labels never occur: the dataset suite's labels_present check is critical.
    config = small_config.model_copy(update={"labels": [*small_config.labels, "weather", "x"]})
    with LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster:
        config = config.model_copy(update={
            "dask": DaskConfig(scheduler_address=cluster.scheduler_address)})
        with pytest.raises(QualityGateFailed, match="labels_present"):
            run_nightly(config)

    lake = Path(config.lake_path)
    [gate] = list((lake / "runs").glob("*/gate.json"))
    assert json.loads(gate.read_text())["passed"] is False
    assert not (lake / "models").exists()  # no training started
    assert "labels_present" in (gate.parent / "report.html").read_text()  # the night's report
    assert not (lake / "curated" / "history.json").exists()  # never a drift baseline
    client = MlflowClient(tracking_uri=config.tracking_uri(), registry_uri=config.tracking_uri())
    assert client.search_registered_models() == []
    [night] = lake_status(lake, config.registry).nights  # finegate status shows why it stopped
    assert (night.gate, night.drops, night.model_version) == ("failed", ["day1", "day2"], None)
    assert "labels_present" in night.gate_reason and night.rows_read == 129
    assert night.curated + night.quarantined + night.duplicates == 129


def test_unreachable_mlflow_fails_clearly_and_keeps_the_data(small_config: Config,
                                                             monkeypatch) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    config = small_config.model_copy(update={"mlflow_tracking_uri": SecretStr(
        "http://127.0.0.1:9")})
    with pytest.raises(MlflowException, match="127.0.0.1:9"):
        run_nightly(config)
    lake = Path(config.lake_path)
    [snapshot_dir] = list((lake / "curated" / "snapshots").iterdir())
    assert pq.read_table(snapshot_dir / "data").num_rows == 120
    assert json.loads((snapshot_dir / "scorecard.json").read_text())["accounting"]["holds"]
    assert not (lake / "models").exists()  # no training time spent on a model it cannot ship
    assert not (lake / "mlflow.db").exists()
    assert sorted(json.loads((lake / "ledger.json").read_text())["drops"]) == ["day1", "day2"]


def test_a_second_run_on_a_busy_lake_is_refused(small_config: Config) -> None:
    from finegate.core.lake import Lake, LakeBusy, lake_lock

    with lake_lock(Lake.at(small_config.lake_path)), pytest.raises(LakeBusy,
                                                                    match="holds the lock"):
        run_nightly(small_config)
    assert not (Path(small_config.lake_path) / "ledger.json").exists()


def test_status_shows_the_four_nights_from_the_lake_and_the_registry(nights: Nights,
                                                                    tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from finegate.cli import app

    config = tmp_path / "finegate.yaml"
    config.write_text(f"lake_path: {nights.config.lake_path}\n")
    result = CliRunner().invoke(app, ["status", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.output)
    assert state["registry_error"] is None and state["champion"] == "2"
    assert state["champion_history"] == ["1", "2"]
    newest_first = [nights.fourth, nights.third, nights.second, nights.first]
    assert [n["run"] for n in state["nights"]] == [Path(r.run_dir).name for r in newest_first]
    assert [n["drops"] for n in state["nights"]] == [[], ["day3"], [], ["day1", "day2"]]
    assert [(n["rows_read"], n["curated"]) for n in state["nights"]] == \
        [(141, 132), (141, 132), (129, 120), (129, 120)]
    assert [n["snapshot"] for n in state["nights"]] == [r.snapshot.digest for r in newest_first]
    assert [n["gate"] for n in state["nights"]] == ["passed"] * 4
    assert [(n["model_version"], n["trained"], n["champion"]) for n in state["nights"]] == \
        [("3", True, False), ("2", True, True), ("1", False, False), ("1", True, False)]
    assert [n["promotion"] for n in state["nights"]] == \
        ["champion stays 2", "promoted to champion", "promoted to champion",
         "promoted to champion"]

    table = CliRunner().invoke(app, ["status", "-c", str(config), "--last", "2"])
    assert table.exit_code == 0, table.output
    assert "the last 2 of 4 night(s)" in table.output and "champion" in table.output
    assert "champion stays 2" in table.output and nights.third.snapshot.digest[:12] in \
        table.output and "141 → 132" in table.output and "day1" not in table.output
    print(table.output)  # the README's example is this output


def test_status_without_its_registry_still_shows_the_lake(nights: Nights, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from finegate.cli import app

    config = tmp_path / "finegate.yaml"
    config.write_text(f"lake_path: {nights.config.lake_path}\n"
                      "mlflow_tracking_uri: http://127.0.0.1:9\n")
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "Registry http://127.0.0.1:9: NOT READ (the registry is not reachable: nothing " \
           "answers at 127.0.0.1:9" in result.output
    assert result.output.count("passed") == 4 and "v3 (trained)" in result.output


def test_a_review_drop_relabels_a_row_in_the_snapshot_scorecard_and_model_card(
        small_config: Config, dirty_landing: Path) -> None:
    """A review drop (issue #17 contract) lands beside the data: its consensus relabels the row
    it reviews, with lineage, and the night's scorecard, MLflow metrics and model card say so."""
    reviewed = topic_rows(30, seed=1, prefix="j")[5]  # a JSONL row of day2
    other = next(label for label in small_config.labels if label != reviewed["label"])
    (dirty_landing / "day3-review").mkdir()
    (dirty_landing / "day3-review" / "review.jsonl").write_text(json.dumps({
        "text": reviewed["text"], "annotator_labels": {"ann1": other, "ann2": other},
        "review_of": reviewed["id"], "queue": "label-issues",
        "annotated_at": "2026-11-29T09:00:00Z"}) + "\n")
    result = run_nightly(small_config)
    data = pq.read_table(result.snapshot.data_path).to_pandas().set_index("id")
    assert data.loc[reviewed["id"], "label"] == other
    assert {"human_review", "reviewed_by:ann1+ann2", "review_queue:label-issues",
            f"human_relabelled_from:{reviewed['label']}"} <= set(data.loc[reviewed["id"],
                                                                          "flags"])
    card = json.loads(Path(result.scorecard_path).read_text())
    assert card["human_reviewed_rows"] == 1 and card["human_relabels"] == 1
    client = registry(small_config)
    run = client.get_run(result.registered.run_id)
    assert run.data.metrics["quality.human_relabels"] == 1
    version = client.get_model_version(small_config.model_name, result.registered.version)
    assert "human review: 1 rows decided by people (1 relabelled" in version.description


def test_kfold_registers_a_model_trained_on_every_fold_but_the_held_out_test_fold(
        small_config: Config) -> None:
    """Under kfold the night cross-validates first, then registers a model trained on every
    fold but the last: its training rows are the snapshot's minus that fold's, its test split
    is that fold, and the cross-validation figures are in MLflow and the model card."""
    from finegate.core.config import SplitConfig
    from finegate.core.lake import read_json

    config = small_config.model_copy(update={"split": SplitConfig(strategy="kfold", folds=3)})
    result = run_nightly(config)
    folds = pq.read_table(result.snapshot.data_path, columns=["fold"]).to_pandas()["fold"]
    held_out = int((folds == 2).sum())
    cv = read_json(Path(result.run_dir) / "crossval.json")
    assert [r["rows"] for r in cv["rounds"]] == [int((folds == f).sum()) for f in range(3)]
    assert result.evaluation.test_rows == held_out
    run = registry(config).get_run(result.registered.run_id)
    assert run.data.params["kfold.train_rows"] == str(result.snapshot.rows - held_out)
    assert run.data.metrics["train_rows"] == result.snapshot.rows - held_out
    assert run.data.metrics["cv_macro_f1_mean"] == pytest.approx(cv["macro_f1"]["mean"])
    assert int(run.data.params["train.steps"]) == cv["final"]["steps"] > 0
    version = registry(config).get_model_version(config.model_name, result.registered.version)
    assert "## Cross-validation (3 folds)" in version.description
    assert version.tags["finegate.promotion.set"] == "golden"  # decided on rows never trained on


def test_a_night_with_nothing_new_keeps_the_review_queue(nights: Nights) -> None:
    """Nights 2 and 4 bring no drop and keep the champion: their queue would be the same
    (and re-scoring the snapshot with the champion costs minutes on CPU), so it stands."""
    queues = sorted(p.parent.name for p in (Path(nights.config.lake_path) / "review" /
                                           "queues").glob("*/summary.json"))
    assert len(queues) == 2, queues
