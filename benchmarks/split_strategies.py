"""Split strategies on a real lake: label shares per split and cross-split leakage.

Copies the data folders of a lake that a nightly run built (e.g. the demo's,
``demo-workspace/lake``) to a temporary folder, rebuilds its snapshot under each
``split.strategy`` from the same dedup and label-review results, and prints per strategy: rows
per split, the largest gap between a label's share of a split and the split's share, and the
pairs of rows repeated across splits (exact, and near at ``dedup.related_threshold``). The
first line is the split before split anchors (a hash of each row's own id), measured the same
way on the same rows.

    python benchmarks/split_strategies.py demo-workspace/lake
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig, SplitConfig
from finegate.core.lake import Lake, read_json
from finegate.core.results import Annotation, LabelsResult
from finegate.core.splits import assign_split, max_share_deviation
from finegate.tasks.dedup import summarise
from finegate.tasks.leakage import cross_split_pairs
from finegate.tasks.snapshot import build_curated_snapshot

COPIED = ["bronze", "silver", "dedup", "dedup_index", "labels", "quarantine", "ledger.json"]


def main(source: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in COPIED:
            path = Path(source) / name
            if path.is_dir():
                shutil.copytree(path, Path(tmp) / name)
            elif path.is_file():
                shutil.copy(path, Path(tmp) / name)
        lake = Lake.at(tmp)
        drops = sorted(read_json(lake.root / "ledger.json")["drops"])
        dedup = summarise(lake, 0)
        labels = LabelsResult(decisions_path=str(lake.labels), rows=0, noise_detection="",
                              issues=0, actions={}, annotation=Annotation())
        print("| strategy | train / validation / test rows | max label-share gap | "
              "cross-split exact | cross-split near | seconds |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(unanchored(lake, drops, dedup, labels))
        for strategy in ("hash", "stratified", "time", "kfold"):
            shares = SplitConfig(strategy=strategy)
            start = time.perf_counter()
            snapshot = build_curated_snapshot(lake, drops, dedup, labels, shares)
            seconds = time.perf_counter() - start
            data = pq.read_table(snapshot.data_path, columns=["label", "split"]).to_pandas()
            plan = read_json(Path(snapshot.path) / "manifest.json")["split"]
            gap = (f"{max_share_deviation(data['label'], data['split'], shares):.4f}"
                   if strategy in ("hash", "stratified") else "n/a")
            if strategy == "time":
                gap = f"n/a (test = {', '.join(plan['test_drops'])})"
            cross = cross_split_pairs(lake, snapshot, DedupConfig())
            rows = " / ".join(str(snapshot.split_rows[s]) for s in ("train", "validation",
                                                                    "test"))
            print(f"| {strategy} | {rows} | {gap} | {(cross['kind'] == 'exact').sum()} | "
                  f"{(cross['kind'] == 'near').sum()} | {seconds:.1f} |")


def unanchored(lake: Lake, drops: list[str], dedup, labels: LabelsResult) -> str:
    """The table line of the hash split of each row's own id (no anchors), as before #15."""
    snapshot = build_curated_snapshot(lake, drops, dedup, labels, SplitConfig())
    for part in Path(snapshot.data_path).glob("*.parquet"):
        table = pq.read_table(part)
        split = assign_split(table["id"].to_pandas(), SplitConfig())
        table = table.set_column(table.schema.get_field_index("split"), "split",
                                 pa.array(split.tolist(), pa.string()))
        part.unlink()  # a hard link into the snapshot the others are built from
        pq.write_table(table, part)
    data = pq.read_table(snapshot.data_path, columns=["label", "split"]).to_pandas()
    cross = cross_split_pairs(lake, snapshot, DedupConfig())
    counts = data["split"].value_counts()
    gap = max_share_deviation(data["label"], data["split"], SplitConfig())
    shutil.rmtree(snapshot.path)  # the strategies below start from no previous snapshot
    lake.latest_snapshot.unlink()
    return (f"| hash of the row id (no anchors) | {counts.get('train', 0)} / "
            f"{counts.get('validation', 0)} / {counts.get('test', 0)} | {gap:.4f} | "
            f"{(cross['kind'] == 'exact').sum()} | {(cross['kind'] == 'near').sum()} | - |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-workspace/lake")
