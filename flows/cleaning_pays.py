"""When does cleaning pay? Noise kind × rate × budget × policy, several seeds, paired tests.

Per (noise kind, rate, seed) the training rows get that noise (finegate/core/noise.py, whose
record of what it changed is the ground truth), the label review's detector runs once
(tasks/labels.py ``label_issues``), and each policy builds its training set from the same
verdicts: ``none`` keeps every row as labelled, ``drop`` removes the flagged rows, ``relabel``
gives flagged rows the suggested label when the detector is sure (else keeps them). A model is
trained on each (``tfidf``: TF-IDF + logistic regression, seconds; ``finetune``: the configured
transformer on a named budget, early-stopped on a noisy or a clean validation split) and scored
on the clean test rows. The summary gives, per cell, mean ± sd over seeds, and for each policy
the paired bootstrap of the seed-mean macro-F1 gain over ``none`` on the same test rows (95%
interval; "significant" when it excludes 0).

Used by benchmarks/cleaning_pays.py (BBC, docs/cleaning-pays/) and its CI-size test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finegate.core.config import LabelsConfig, TrainConfig
from finegate.core.noise import add_noise
from finegate.core.policy_check import fit_predict, macro_f1_counts, paired_bootstrap
from finegate.tasks.labels import choose_actions, label_issues

POLICIES = ("none", "drop", "relabel")
# Fine-tune budgets: the CPU budget as configured, and a longer one (several epochs: room to
# memorise the noise). Values are TrainConfig overrides.
BUDGETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "long": {"epochs": 5.0, "max_steps": 0, "cpu_max_steps": 100_000, "eval_every": 50,
             "cpu_eval_every": 50, "patience": 3},
}


@dataclass(frozen=True)
class Setting:
    """How a cell's model is trained."""

    model: str = "tfidf"  # tfidf | finetune
    budget: str = "-"  # a BUDGETS key for finetune
    validation: str = "-"  # noisy | clean: the early-stopping split's labels (finetune)

    @property
    def name(self) -> str:
        """``tfidf`` or e.g. ``finetune-long-clean``."""
        return self.model if self.model == "tfidf" else (
            f"{self.model}-{self.budget}-{self.validation}")


def policy_rows(rows: pd.DataFrame, issues: pd.DataFrame, policy: str) -> pd.DataFrame:
    """The training rows a policy leaves (relabelled ones with their new label)."""
    if policy == "none":
        return rows
    actions = np.array(choose_actions(issues, rows["label"].tolist(),
                                      LabelsConfig(policy=policy)))
    out = rows.assign(label=np.where(actions == "relabel", issues["suggested_label"],
                                     rows["label"]))
    return out.loc[actions != "drop"]


def finetune_predict(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame,
                     label_set: list[str], settings: TrainConfig, workdir: Path) -> np.ndarray:
    """Fine-tune on ``train`` (early stopping on ``validation``) and predict ``test``."""
    from finegate.core.device import eval_max_length, pick_device
    from finegate.core.inference import predict
    from finegate.tasks.finetune import train as train_model

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    data = workdir / "data.parquet"
    pd.concat([train.assign(split="train"), validation.assign(split="validation")])[
        ["id", "text", "label", "split"]].to_parquet(data)
    trained = train_model(str(data), label_set, settings, workdir / "model")
    device = pick_device(settings.device)
    predicted = predict(trained.model_dir, test["text"].tolist(),
                        eval_max_length(settings, device), device)
    shutil.rmtree(workdir, ignore_errors=True)
    return np.array(predicted)


def run_cell(train: pd.DataFrame, test: pd.DataFrame, label_set: list[str], kind: str,
             rate: float, seed: int, settings: list[Setting], *, folds: int = 5,
             train_config: TrainConfig | None = None, workdir: Path | None = None,
             validation_share: float = 0.1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One (kind, rate, seed): noise, one detection, every policy × setting trained and scored.

    Returns the result rows and the test predictions keyed by (setting, policy).
    """
    noisy = add_noise(kind, train, rate, label_set, seed=seed) if rate else train.assign(
        true_label=train["label"], is_noisy=False)
    held = np.random.default_rng(seed).random(len(noisy)) < validation_share
    validation, rows = noisy.loc[held], noisy.loc[~held].reset_index(drop=True)
    issues, _ = label_issues(rows["text"].tolist(), rows["label"].tolist(), label_set, folds)
    flagged, truth_noisy = issues["is_label_issue"].to_numpy(bool), rows["is_noisy"].to_numpy()
    detection = {
        "noisy_share": float(truth_noisy.mean()),
        "flagged": int(flagged.sum()),
        "flag_precision": float(truth_noisy[flagged].mean()) if flagged.any() else None,
        "flag_recall": float(flagged[truth_noisy].mean()) if truth_noisy.any() else None,
    }
    code = {label: i for i, label in enumerate(label_set)}
    truth = np.array([code[t] for t in test["label"]])
    results, predictions = [], {}
    for policy in POLICIES:
        used = policy_rows(rows, issues, policy)
        for setting in settings:
            if setting.model == "tfidf":
                predicted = fit_predict(used["text"].tolist(), used["label"].tolist(),
                                        test["text"].tolist())
            else:
                stop_on = validation if setting.validation == "noisy" else validation.assign(
                    label=validation["true_label"])
                config = (train_config or TrainConfig()).model_copy(
                    update={**BUDGETS[setting.budget], "seed": seed})
                predicted = finetune_predict(
                    used, stop_on, test, label_set, config,
                    (workdir or Path("cleaning-pays-work")) / f"{kind}-{rate}-{seed}-{policy}")
            codes = np.array([code[p] for p in predicted])
            predictions[(setting.name, policy)] = codes
            results.append({
                "kind": kind, "rate": rate, "seed": seed, "setting": setting.name,
                "policy": policy, "train_rows": len(used),
                "dropped": len(rows) - len(used),
                "relabelled": int((used["label"] != rows.loc[used.index, "label"]).sum()),
                "still_noisy": float((used["label"] != used["true_label"]).mean()),
                "macro_f1": float(macro_f1_counts(truth, codes, len(label_set))[0]),
                **detection})
    return results, predictions


def run_grid(train: pd.DataFrame, test: pd.DataFrame, label_set: list[str],
             kinds: list[str], rates: list[float], seeds: list[int],
             settings: list[Setting] | None = None, *, progress: Callable[[str], None] = print,
             checkpoint: Path | None = None, only_done: bool = False,
             include_clean: bool = True,
             **options: Any) -> tuple[pd.DataFrame, dict[tuple[Any, ...], np.ndarray]]:
    """Every (kind, rate, seed) cell, plus the noise-free cells (kind ``clean``) per seed.

    With ``checkpoint`` (a pickle file), finished cells are saved as they finish and a rerun
    with the same arguments skips them (a long grid survives being stopped); ``only_done``
    summarises just the checkpoint's cells.
    """
    import pickle

    settings = settings or [Setting()]
    # the highest rate of every kind first: a grid stopped early has the contrasts that matter
    cells = [("clean", 0.0)] * include_clean + [
        (k, r) for r in sorted(rates, reverse=True) for k in kinds if r > 0]
    done: dict[tuple[Any, ...], Any] = {}
    if checkpoint and checkpoint.is_file():
        done = pickle.loads(checkpoint.read_bytes())
    rows, predictions = [], {}
    for n, (kind, rate) in enumerate(cells, 1):
        for seed in seeds:
            key = (kind, rate, seed, tuple(s.name for s in settings))
            if key not in done and only_done:
                continue
            if key not in done:
                done[key] = run_cell(train, test, label_set, kind, rate, seed, settings,
                                     **options)
                if checkpoint:
                    checkpoint.parent.mkdir(parents=True, exist_ok=True)
                    checkpoint.write_bytes(pickle.dumps(done))
            result, predicted = done[key]
            rows += result
            predictions.update({(kind, rate, seed, *key): v for key, v in predicted.items()})
            progress(f"[{n}/{len(cells)}] {kind} {rate:.0%} seed {seed}: " + ", ".join(
                f"{r['setting']}/{r['policy']} {r['macro_f1']:.3f}" for r in result))
    return pd.DataFrame(rows), predictions


def summarise(results: pd.DataFrame, predictions: dict[tuple[Any, ...], np.ndarray],
              test_labels: np.ndarray, classes: int, samples: int = 2000) -> pd.DataFrame:
    """Per (kind, rate, setting, policy): mean ± sd over seeds; for drop/relabel the paired
    bootstrap of the seed-mean gain over ``none`` (95% interval, significant if it excludes 0)."""
    out = []
    for (kind, rate, setting, policy), part in results.groupby(
            ["kind", "rate", "setting", "policy"], sort=False):
        seeds = sorted(part["seed"])
        row = {"kind": kind, "rate": rate, "setting": setting, "policy": policy,
               "seeds": len(seeds), "macro_f1_mean": part["macro_f1"].mean(),
               "macro_f1_sd": part["macro_f1"].std(ddof=1) if len(seeds) > 1 else 0.0,
               "train_rows": part["train_rows"].mean(), "dropped": part["dropped"].mean(),
               "relabelled": part["relabelled"].mean(),
               "still_noisy": part["still_noisy"].mean(),
               "noisy_share": part["noisy_share"].mean(),
               "flag_precision": part["flag_precision"].mean(),
               "flag_recall": part["flag_recall"].mean()}
        if policy != "none":
            base = np.stack([predictions[(kind, rate, s, setting, "none")] for s in seeds])
            other = np.stack([predictions[(kind, rate, s, setting, policy)] for s in seeds])
            test = paired_bootstrap(test_labels, base, other, classes, samples)
            row.update(gain=test["gain"], gain_low=test["low"], gain_high=test["high"],
                       p_better=test["confidence"],
                       significant=bool(test["low"] > 0 or test["high"] < 0))
        out.append(row)
    return pd.DataFrame(out)


def verdict(row: pd.Series) -> str:
    """``helps``/``hurts`` when significant, else ``no significant change``."""
    if row["policy"] == "none":
        return ""
    if not row["significant"]:
        return "no significant change"
    return "helps" if row["gain"] > 0 else "hurts"


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (one row per kind, rate and setting)."""
    lines = ["| noise | rate | model | none | drop (gain, 95% CI) | relabel (gain, 95% CI) | "
             "noisy share | flag precision / recall |", "|" + " --- |" * 8]
    for (kind, rate, setting), part in summary.groupby(["kind", "rate", "setting"],
                                                       sort=False):
        by = part.set_index("policy")
        cells = []
        for policy in ("drop", "relabel"):
            r = by.loc[policy]
            mark = "**" if r["significant"] else ""
            cells.append(f"{r['macro_f1_mean']:.3f} ± {r['macro_f1_sd']:.3f} ({mark}"
                         f"{r['gain']:+.3f}{mark}, {r['gain_low']:+.3f}..{r['gain_high']:+.3f})")
        none = by.loc["none"]
        precision = ("–" if pd.isna(none["flag_precision"]) else
                     f"{none['flag_precision']:.2f}")
        recall = "–" if pd.isna(none["flag_recall"]) else f"{none['flag_recall']:.2f}"
        lines.append(f"| {kind} | {rate:.0%} | {setting} | {none['macro_f1_mean']:.3f} ± "
                     f"{none['macro_f1_sd']:.3f} | {cells[0]} | {cells[1]} | "
                     f"{none['noisy_share']:.2f} | {precision} / {recall} |")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: Path, setting: str = "tfidf") -> Path:
    """Per noise kind: macro-F1 (mean ± sd over seeds) against the rate, a line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = summary.loc[summary["setting"] == setting]
    clean = part.loc[part["kind"] == "clean"].set_index("policy")
    kinds = [k for k in part["kind"].unique() if k != "clean"]
    figure, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.6), sharey=True,
                                squeeze=False)
    styles = {"none": ("#e45756", "--"), "drop": ("#4c78a8", "-"), "relabel": ("#54a24b", "-.")}
    for axis, kind in zip(axes[0], kinds, strict=True):
        for policy, (colour, line) in styles.items():
            noise_free = clean.loc[[policy]].reset_index() if policy in clean.index else None
            rows = pd.concat([noise_free, part.loc[
                (part["kind"] == kind) & (part["policy"] == policy)]]).sort_values("rate")
            axis.errorbar(rows["rate"], rows["macro_f1_mean"], yerr=rows["macro_f1_sd"],
                          color=colour, linestyle=line, marker="o", capsize=3, label=policy)
            for _, r in rows.loc[rows.get("significant", False) == True].iterrows():  # noqa: E712
                axis.annotate("*", (r["rate"], r["macro_f1_mean"]), color=colour,
                              textcoords="offset points", xytext=(4, 4))
        axis.set(title=kind, xlabel="noise rate")
    axes[0][0].set_ylabel(f"macro-F1 on clean test rows ({setting})")
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Does cleaning pay? mean ± sd over seeds; * = paired bootstrap "
                    "95% CI of the gain over none excludes 0", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
