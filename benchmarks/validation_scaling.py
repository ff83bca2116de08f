"""Benchmark: partition-parallel GX validation of a large synthetic snapshot.

Builds a landing drop of ``--rows`` synthetic labelled rows (JSONL, ``--files`` files), runs
Finegate's ingest and clean on a Dask LocalCluster, turns the silver partitions into a curated
snapshot (split column added), then validates the ``curated_rows`` suite on it with 1 and with
2 workers (GX imported on the workers beforehand, so the timing is validation only). Reports
the validation speed-up from 1 to 2 workers and validation time as a share of ingest + clean.
Also times the scorecard's whole-snapshot metrics (lengths, vocabulary coverage, drift against a
previous snapshot), which the quality stage computes with pandas in the flow's process.

Run: ``.venv/bin/python benchmarks/validation_scaling.py --rows 1000000``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from finegate.core.config import Config, SplitConfig
from finegate.core.lake import Lake
from finegate.core.splits import assign_split
from finegate.tasks.clean import clean_drop
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.validate import load_suite_json, validate_rows

WORDS = ("market growth shares profit film award band music election minister vote party "
         "match goal team season phone software chip network the a of and to in said").split()
LABELS = Config().labels


def write_landing(landing: Path, rows: int, files: int) -> None:
    rng = random.Random(0)
    drop = landing / "big"
    drop.mkdir(parents=True)
    per_file = rows // files
    for n in range(files):
        with (drop / f"part-{n:03d}.jsonl").open("w") as handle:
            for i in range(per_file):
                text = " ".join(rng.choice(WORDS) for _ in range(20))
                handle.write(json.dumps({"id": f"{n}-{i}", "text": text,
                                         "label": LABELS[i % len(LABELS)]}) + "\n")


def curate(lake: Lake, out: Path) -> None:
    out.mkdir(parents=True)
    for part in sorted(lake.silver("big").glob("*.parquet")):
        frame = pq.read_table(part).to_pandas()
        frame["split"] = assign_split(frame["id"], SplitConfig())
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / part.name)


def timed_validation(data: Path, workers: int, suite: dict) -> float:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0",
                      memory_limit="6GiB") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("great_expectations"))  # import cost is per worker, once
        started = time.perf_counter()
        result = validate_rows(data, suite, {"label_set": LABELS})
        seconds = time.perf_counter() - started
    assert result.results[0].result["element_count"] > 0
    return seconds


def timed_scorecard_metrics(data: Path) -> float:
    """The scorecard's metrics over the whole snapshot, this snapshot standing in as previous."""
    from finegate.core.drift import drift_metrics, word_counts
    from finegate.tasks.quality import length_stats, vocabulary_coverage

    started = time.perf_counter()
    frame = pq.read_table(data, columns=["id", "text", "label", "split"]).to_pandas()
    frame["drop"] = "big"
    length_stats(frame["text"].str.len())
    length_stats(word_counts(frame["text"]))
    vocabulary_coverage(frame)
    drift_metrics(frame, frame)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/validation_scaling.json")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_landing(root / "landing", args.rows, args.files)
        lake = Lake.at(root / "lake")
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                          memory_limit="6GiB") as cluster, Client(cluster):
            started = time.perf_counter()
            ingest_drop(root / "landing", "big", lake)
            clean_drop("big", lake, Config().label_set)
            ingest_clean = time.perf_counter() - started
        curate(lake, root / "snapshot")
        suite = load_suite_json(Config().expectations_path, "curated_rows")
        one = timed_validation(root / "snapshot", 1, suite)
        two = timed_validation(root / "snapshot", 2, suite)
        scorecard = timed_scorecard_metrics(root / "snapshot")
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "rows": args.rows, "partitions": args.files,
              "ingest_clean_seconds_2_workers": ingest_clean,
              "validation_seconds_1_worker": one, "validation_seconds_2_workers": two,
              "speedup_1_to_2_workers": one / two,
              "validation_share_of_ingest_clean": two / ingest_clean,
              "scorecard_metrics_seconds": scorecard,
              "scorecard_share_of_ingest_clean": scorecard / ingest_clean}
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
