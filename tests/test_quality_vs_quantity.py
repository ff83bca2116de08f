"""The quality-vs-quantity experiment on a small synthetic snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from finegate.core.config import Config, TrainConfig
from finegate.flows.quality_vs_quantity import (
    Cell,
    matching_point,
    noisy_subset,
    quality_vs_quantity,
)
from tests.factories import LABELS, topic_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def snapshot(tmp_path: Path) -> str:
    rows = pd.DataFrame(topic_rows(240, seed=8, prefix="e"))
    rows["split"] = ["train", "train", "train", "test"] * 60
    path = tmp_path / "snapshot.parquet"
    rows.to_parquet(path)
    return str(path)


def test_noise_and_fractions_are_stable_and_nested(snapshot: str) -> None:
    train = pd.read_parquet(snapshot).query("split == 'train'")
    half = noisy_subset(train, Cell(0.0, 0.5, False), LABELS, seed=0)
    full = noisy_subset(train, Cell(0.4, 1.0, False), LABELS, seed=0)
    assert set(half["id"]) <= set(full["id"]) and 0.35 < len(half) / len(train) < 0.65
    flipped = (full["label"] != full["true_label"]).mean()
    assert 0.3 < flipped < 0.5 and (half["label"] == half["true_label"]).all()


def test_matching_point_finds_the_smallest_clean_fraction() -> None:
    results = pd.DataFrame([
        {"noise": 0.0, "fraction": f, "cleaning": False, "eval_macro_f1": s}
        for f, s in ((0.25, 0.80), (0.5, 0.90), (1.0, 0.95))] + [
        {"noise": 0.4, "fraction": 1.0, "cleaning": False, "eval_macro_f1": 0.85}])
    assert matching_point(results) == {"all_noisy_macro_f1": 0.85, "noise": 0.4,
                                       "clean_fraction": 0.5}


def test_experiment_flow_writes_table_plots_and_mlflow_runs(snapshot: str, tmp_path: Path,
                                                            tiny_model_dir: Path) -> None:
    from mlflow import MlflowClient

    config = Config(lake_path=str(tmp_path / "lake"), labels=LABELS)
    result = quality_vs_quantity(config, snapshot, [0.0, 0.4], [0.5, 1.0], "tfidf")
    out = Path(result["out_dir"])
    assert result["cells"] == 8
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 8 and table["eval_macro_f1"].between(0, 1).all()
    noisy = table.query("noise == 0.4 and fraction == 1.0")
    assert noisy.query("cleaning")["dropped"].iloc[0] > 0
    assert (out / "quality_vs_quantity.png").stat().st_size > 10_000
    assert "<svg" in (out / "quality_vs_quantity.html").read_text()
    client = MlflowClient(tracking_uri=config.tracking_uri())
    children = client.search_runs(
        [client.get_experiment_by_name("finegate").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'")
    assert len(children) == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "tfidf"

    tiny = config.model_copy(update={"train": TrainConfig(
        model_path=str(tiny_model_dir), device="cpu", cpu_max_steps=2, cpu_max_length=16)})
    small = quality_vs_quantity(tiny, snapshot, [0.2], [1.0], "finetune", str(tmp_path / "ft"))
    assert small["cells"] == 2
