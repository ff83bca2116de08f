"""Quality vs quantity: how label noise, data fraction and cleaning move macro-F1 on clean data.

Each grid cell takes a stable fraction of the snapshot's train split, flips a share of its
labels at random (symmetric noise), optionally cleans it with Finegate's label review (confident
learning, policy ``drop``), trains a model and scores it on the clean test split (or the golden
set). Cells run as Prefect tasks in parallel; every cell is an MLflow child run under one parent
run, which also gets the results table, the plots (PNG) and an interactive HTML version.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from finegate.core.config import Config, LabelsConfig
from finegate.core.lake import Lake, write_json


@dataclass(frozen=True)
class Cell:
    """One grid point."""

    noise: float
    fraction: float
    cleaning: bool

    @property
    def name(self) -> str:
        """Readable cell name, e.g. ``noise0.2-frac0.5-clean``."""
        return f"noise{self.noise}-frac{self.fraction}-{'clean' if self.cleaning else 'raw'}"


def stable_share(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by the key (so fractions are nested and reproducible)."""
    return int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:12], 16) / 16**12


def noisy_subset(train: pd.DataFrame, cell: Cell, labels: list[str], seed: int) -> pd.DataFrame:
    """The cell's training rows: a stable fraction, with ``noise`` of the labels flipped."""
    subset = train.loc[[stable_share(i, "fraction") < cell.fraction for i in train["id"]]].copy()
    rng = np.random.default_rng(seed)
    flip = rng.random(len(subset)) < cell.noise
    subset["true_label"] = subset["label"]
    subset.loc[flip, "label"] = [labels[(labels.index(lab) + rng.integers(1, len(labels)))
                                        % len(labels)] for lab in subset.loc[flip, "label"]]
    return subset


def fit_and_score(train: pd.DataFrame, evaluation: pd.DataFrame, config: Config, model: str,
                  workdir: Path) -> tuple[float, float]:
    """Macro-F1 on the training rows (their labels) and on the clean evaluation rows."""
    from sklearn.metrics import f1_score

    if model == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        pipeline = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2),
                                 LogisticRegression(C=10.0, max_iter=2000))
        pipeline.fit(train["text"], train["label"])
        fit_predict, eval_predict = pipeline.predict(train["text"]), pipeline.predict(
            evaluation["text"])
    else:
        from finegate.core.device import eval_max_length, pick_device
        from finegate.core.inference import predict
        from finegate.tasks.finetune import train as train_model

        shutil.rmtree(workdir, ignore_errors=True)  # a cell of an earlier experiment is stale
        workdir.mkdir(parents=True)
        data = workdir / "data.parquet"
        pd.concat([train.assign(split="train"), evaluation.assign(split="test")])[
            ["id", "text", "label", "split"]].to_parquet(data)
        trained = train_model(str(data), config.labels, config.train, workdir / "model")
        device = pick_device(config.train.device)
        length = eval_max_length(config.train, device)
        fit_predict = predict(trained.model_dir, train["text"].tolist(), length, device)
        eval_predict = predict(trained.model_dir, evaluation["text"].tolist(), length, device)
    return (float(f1_score(train["label"], fit_predict, average="macro")),
            float(f1_score(evaluation["label"], eval_predict, average="macro")))


@task(name="cell", task_run_name="cell-{cell.name}")
def run_cell(config: Config, cell: Cell, train_path: str, evaluation_path: str, model: str,
             workdir: str, seed: int = 0) -> dict[str, Any]:
    """Prefect task: build the cell's training set, optionally clean it, train and score."""
    from finegate.tasks.labels import choose_actions, label_issues

    evaluation = pd.read_parquet(evaluation_path)
    rows = noisy_subset(pd.read_parquet(train_path), cell, config.labels, seed)
    dropped = 0
    if cell.cleaning:
        issues, _ = label_issues(rows["text"].tolist(), rows["label"].tolist(), config.labels,
                                 config.label_quality.folds)
        actions = choose_actions(issues, rows["label"].tolist(), LabelsConfig(policy="drop"))
        keep = np.array(actions) != "drop"
        dropped = int((~keep).sum())
        rows = rows.loc[keep]
    fit_f1, eval_f1 = fit_and_score(rows, evaluation, config, model,
                                    Path(workdir) / cell.name)
    return {**asdict(cell), "name": cell.name, "train_rows": len(rows), "dropped": dropped,
            "train_macro_f1": fit_f1, "eval_macro_f1": eval_f1,
            "generalisation_gap": fit_f1 - eval_f1}


def matching_point(results: pd.DataFrame) -> dict[str, Any] | None:
    """The smallest clean fraction that scores at least as well as all the noisiest data."""
    noisiest = results.loc[(results["fraction"] == results["fraction"].max())
                           & (results["noise"] == results["noise"].max()) & ~results["cleaning"]]
    clean = results.loc[(results["noise"] == 0) & ~results["cleaning"]].sort_values("fraction")
    if noisiest.empty or clean.empty:
        return None
    target = float(noisiest["eval_macro_f1"].iloc[0])
    better = clean.loc[clean["eval_macro_f1"] >= target]
    return {"all_noisy_macro_f1": target, "noise": float(results["noise"].max()),
            "clean_fraction": float(better["fraction"].iloc[0]) if len(better) else None}


def plot(results: pd.DataFrame, path: Path) -> Path:
    """Macro-F1 vs data fraction (a line per noise rate, raw vs cleaned), and the train-eval gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = dict(zip(sorted(results["noise"].unique()), plt.cm.tab10.colors, strict=False))
    for (noise, cleaning), part in results.groupby(["noise", "cleaning"]):
        part = part.sort_values("fraction")
        style = {"linestyle": "-" if cleaning else "--", "marker": "o", "color": colours[noise],
                 "label": f"noise {noise:.0%} {'cleaned' if cleaning else 'raw'}"}
        left.plot(part["fraction"], part["eval_macro_f1"], **style)
        right.plot(part["fraction"], part["generalisation_gap"], **style)
    left.set(xlabel="fraction of the training data", ylabel="macro-F1 on clean data",
             title="Quality vs quantity")
    right.set(xlabel="fraction of the training data", ylabel="train macro-F1 - eval macro-F1",
              title="Generalisation gap")
    left.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def interactive_html(results: pd.DataFrame, point: dict[str, Any] | None, path: Path) -> Path:
    """A self-contained HTML chart: SVG lines with hover values, plus the results table."""
    width, height, pad = 640, 360, 50
    low = min(results["eval_macro_f1"].min(), 0.9)
    x = lambda f: pad + (width - 2 * pad) * f  # noqa: E731
    y = lambda v: height - pad - (height - 2 * pad) * (v - low) / (1 - low or 1)  # noqa: E731
    colours = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"]
    lines = []
    for n, ((noise, cleaning), part) in enumerate(results.groupby(["noise", "cleaning"])):
        part = part.sort_values("fraction")
        colour, dash = colours[n // 2 % len(colours)], "" if cleaning else "stroke-dasharray='6 4'"
        points = " ".join(f"{x(f):.1f},{y(v):.1f}" for f, v in zip(part["fraction"],
                                                                  part["eval_macro_f1"],
                                                                  strict=True))
        name = f"noise {noise:.0%} {'cleaned' if cleaning else 'raw'}"
        lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' {dash} "
                     f"points='{points}'><title>{html.escape(name)}</title></polyline>")
        lines += [f"<circle cx='{x(f):.1f}' cy='{y(v):.1f}' r='5' fill='{colour}'><title>"
                  f"{html.escape(name)}, fraction {f}: macro-F1 {v:.3f}</title></circle>"
                  for f, v in zip(part["fraction"], part["eval_macro_f1"], strict=True)]
    summary = (f"<p>The smallest clean fraction that matches all the data at "
               f"{point['noise']:.0%} noise (macro-F1 {point['all_noisy_macro_f1']:.3f}): "
               f"<b>{point['clean_fraction']}</b></p>" if point else "")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Quality vs quantity"
            f"</title></head><body style='font-family:sans-serif'><h1>Quality vs quantity</h1>"
            f"{summary}<p>Hover a point for its value; dashed = raw, solid = cleaned.</p>"
            f"<svg width='{width}' height='{height}' role='img' aria-label='macro-F1 vs fraction'>"
            f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' "
            f"stroke='#333'/><line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' "
            f"stroke='#333'/>{''.join(lines)}</svg>"
            f"{results.to_html(index=False, float_format='%.4f')}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def log_to_mlflow(config: Config, results: pd.DataFrame, files: list[Path]) -> str:
    """One parent run with the table and plots, one child run per cell."""
    import mlflow

    from finegate.core.registry import ensure_experiment, mlflow_uri

    mlflow.set_tracking_uri(mlflow_uri(config.registry))
    experiment = ensure_experiment(config.registry)
    with mlflow.start_run(experiment_id=experiment, run_name="quality-vs-quantity") as parent:
        for row in results.to_dict("records"):
            with mlflow.start_run(experiment_id=experiment, run_name=row["name"], nested=True):
                mlflow.log_params({k: row[k] for k in ("noise", "fraction", "cleaning")})
                mlflow.log_metrics({k: row[k] for k in ("train_macro_f1", "eval_macro_f1",
                                                        "generalisation_gap", "train_rows",
                                                        "dropped")})
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="experiment")
    return parent.info.run_id


@flow(name="finegate-quality-vs-quantity", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count()))
def quality_vs_quantity(config: Config, data_path: str, noise_rates: list[float],
                        fractions: list[float], model: str = "tfidf",
                        out_dir: str | None = None) -> dict[str, Any]:
    """Run the grid (noise × fraction × cleaning off/on) and write table, plots and HTML."""
    from prefect.artifacts import create_link_artifact

    from finegate.core.inference import read_golden

    frame = pd.read_parquet(data_path, columns=["id", "text", "label", "split"])
    train = frame.loc[frame["split"] == "train"].reset_index(drop=True)
    if config.evaluation.golden_path:
        texts, names = read_golden(config.evaluation.golden_path, config.label_set)
        evaluation = pd.DataFrame({"id": [f"g{i}" for i in range(len(texts))], "text": texts,
                                   "label": names})
    else:
        evaluation = frame.loc[frame["split"] == "test"].reset_index(drop=True)
    out = Path(out_dir or Lake.at(config.lake_path).root / "experiments" / "quality_vs_quantity"
               ).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train.to_parquet(out / "train.parquet")
    evaluation.to_parquet(out / "evaluation.parquet")
    cells = [Cell(n, f, c) for n in noise_rates for f in fractions for c in (False, True)]
    print(f"{len(cells)} cells, {len(train)} train rows, {len(evaluation)} clean eval rows")
    inputs = (str(out / "train.parquet"), str(out / "evaluation.parquet"), model, str(out))
    if model == "finetune":  # one training at a time: torch's seeds and threads are per process
        rows = [run_cell(config, cell, *inputs) for cell in cells]
    else:
        rows = [f.result() for f in [run_cell.submit(config, cell, *inputs) for cell in cells]]
    results = pd.DataFrame(rows).sort_values(["noise", "cleaning", "fraction"])
    point = matching_point(results)
    results.to_csv(out / "results.csv", index=False)
    write_json(out / "summary.json", {"matching_point": point, "model": model,
                                      "cells": results.to_dict("records")})
    files = [out / "results.csv", out / "summary.json",
             plot(results, out / "quality_vs_quantity.png"),
             interactive_html(results, point, out / "quality_vs_quantity.html")]
    run_id = log_to_mlflow(config, results, files)
    create_link_artifact(key="finegate-experiment", link=files[-1].as_uri(),
                         description=f"Quality vs quantity ({len(cells)} cells), MLflow run "
                                     f"{run_id}")
    return {"out_dir": str(out), "matching_point": point, "mlflow_run_id": run_id,
            "cells": len(cells), "results": json.loads(results.to_json(orient="records"))}
