"""The when-does-cleaning-pay grid at CI size: noise kind x rate x policy, 3 seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finegate.flows.cleaning_pays import markdown_table, plot, run_grid, summarise
from tests.factories import LABELS, topic_rows


def test_tfidf_grid_measures_cleaning_against_the_generators_record(tmp_path: Path) -> None:
    frame = pd.DataFrame(topic_rows(360, seed=4, prefix="g"))
    frame["text"] = frame["text"].str.split().str[:12].str.join(" ")  # short: a harder task
    train, test = frame.iloc[:270].reset_index(drop=True), frame.iloc[270:].reset_index(
        drop=True)
    results, predictions = run_grid(train, test, LABELS, ["symmetric", "asymmetric"], [0.4],
                                    [0, 1, 2], progress=lambda _: None)
    assert len(results) == 3 * 3 * 3  # (clean, symmetric, asymmetric) x seeds x policies
    code = {label: i for i, label in enumerate(LABELS)}
    summary = summarise(results, predictions, np.array([code[t] for t in test["label"]]),
                        len(LABELS), samples=300)
    assert (summary["seeds"] == 3).all() and (summary["macro_f1_sd"] >= 0).all()
    cell = summary.set_index(["kind", "policy"])
    noisy = cell.loc[("symmetric", "none")]
    dropped = cell.loc[("symmetric", "drop")]
    # the noise is real (generator's record) and drop removes most of it
    assert 0.3 < noisy["noisy_share"] < 0.5 and noisy["flag_precision"] > 0.6
    assert dropped["still_noisy"] < noisy["still_noisy"] / 2, (dropped, noisy)
    # the paired test's interval contains its own gain, and the verdicts are consistent
    gains = summary.dropna(subset=["gain"])
    assert ((gains["gain_low"] <= gains["gain"]) & (gains["gain"] <= gains["gain_high"])).all()
    assert (gains["significant"] == ((gains["gain_low"] > 0) | (gains["gain_high"] < 0))).all()
    table = markdown_table(summary)
    assert table.count("\n") == 2 + 3 - 1 and "| symmetric | 40% | tfidf |" in table
    assert plot(summary, tmp_path / "grid.png").stat().st_size > 10_000


def test_finetune_cells_stop_early_on_a_noisy_or_a_clean_validation_split(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    from finegate.core.config import TrainConfig
    from finegate.flows.cleaning_pays import Setting, run_cell

    frame = pd.DataFrame(topic_rows(90, seed=5, prefix="f"))
    train, test = frame.iloc[:72].reset_index(drop=True), frame.iloc[72:].reset_index(drop=True)
    tiny = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_steps=2,
                       cpu_max_length=16, cpu_eval_every=1)
    settings = [Setting("finetune", "cpu", "noisy"), Setting("finetune", "cpu", "clean")]
    rows, predictions = run_cell(train, test, LABELS, "symmetric", 0.4, 0, settings, folds=3,
                                 train_config=tiny, workdir=tmp_path / "work",
                                 validation_share=0.25)
    assert [(r["setting"], r["policy"]) for r in rows] == [
        (s.name, p) for p in ("none", "drop", "relabel") for s in settings]
    assert all(len(v) == len(test) for v in predictions.values())
    assert all(0 <= r["macro_f1"] <= 1 for r in rows)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
