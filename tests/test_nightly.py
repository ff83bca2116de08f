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
    """Three nights of one lake: the first delivery, nothing new, then a new drop."""

    config: Config
    first: NightlyResult
    second: NightlyResult
    versions_after_second: int  # model versions in the registry after night two
    third: NightlyResult


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
    return Nights(config, first, second, versions, run_nightly(config))


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


def test_night_three_reads_only_the_new_drop_and_registers_a_challenger(nights: Nights) -> None:
    first, third, config = nights.first, nights.third, nights.config
    assert third.drops_ingested == ["day3"] and third.trained
    assert third.accounting.rows_read == 129 + 12 and third.accounting.holds
    assert third.snapshot.rows == first.snapshot.rows + 12
    assert third.registered.version == "2" and "challenger" in third.registered.aliases
    decided = registry(config).get_model_version(config.model_name, "2").tags
    assert decided["finegate.promotion.set"] == "golden"
    history = json.loads((Path(config.lake_path) / "curated" / "history.json").read_text())
    assert [h["snapshot"] for h in history] == [first.snapshot.digest, third.snapshot.digest]
    drift = json.loads(Path(third.scorecard_path).read_text())["drift"]
    assert drift["new_rows"] == 12 and drift["new_drop"] == "day3"


def write_new_drop(folder: Path) -> None:
    """Twelve new, distinct rows in a new drop."""
    folder.mkdir(parents=True)
    rows = topic_rows(12, seed=42, prefix="d3")
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


class Killed(RuntimeError):
    """The training process dies right after a checkpoint."""


def test_a_run_killed_during_training_resumes_from_its_checkpoint(small_config: Config,
                                                                 monkeypatch) -> None:
    from finegate.tasks import finetune as finetune_module

    real, results = finetune_module.train, []

    def killed_in_the_first_run(*args, on_progress=None, **kwargs):  # task and retry both die
        if len(results) < 2:
            results.append("killed")

            def die_after_step_2(step: int, total: int, loss: float) -> None:
                if on_progress:
                    on_progress(step, total, loss)
                if step >= 2:
                    raise Killed(f"killed after step {step} (checkpoint kept)")

            return real(*args, on_progress=die_after_step_2, **kwargs)
        results.append(real(*args, on_progress=on_progress, **kwargs))
        return results[-1]

    monkeypatch.setattr(finetune_module, "train", killed_in_the_first_run)
    config = small_config.model_copy(update={"train": small_config.train.model_copy(
        update={"checkpoint_every": 1})})
    with pytest.raises(Killed):
        run_nightly(config)
    ledger = json.loads((Path(config.lake_path) / "ledger.json").read_text())
    assert sorted(ledger["drops"]) == ["day1", "day2"]  # the data work is kept

    resumed = run_nightly(config)
    assert resumed.drops_ingested == [] and resumed.trained  # nothing re-ingested
    assert results[-1].resumed_from == 3 and results[-1].steps == 4  # went on from step 3
    assert resumed.accounting.holds and resumed.registered.version == "1"


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
