"""Snapshot: the curated dataset, named by the digest of its content.

Writes ``curated/snapshots/<digest[:16]>/`` with ``data/`` (the curated rows with their stable
split, relabels and flags of the label review applied), ``duplicates/`` (the dedup log that run
used) and ``manifest.json``. The same curated
content always gives the same digest, so an unchanged snapshot needs no retraining.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import SplitConfig
from finegate.core.lake import Lake, replace_dir, write_json
from finegate.core.results import DedupResult, LabelsResult, SnapshotResult
from finegate.core.schemas import CURATED_SCHEMA, SILVER_COLUMNS, row_keys, write_parquet
from finegate.core.splits import SPLITS, assign_split


def row_digest(row_id: str, label: str, split: str, text: str, annotators: object) -> str:
    """Digest of everything a curated row contributes to training."""
    payload = json.dumps([row_id, label, split, text, annotators], default=list)
    return hashlib.sha256(payload.encode()).hexdigest()


RowChanges = dict[tuple[str, int], tuple[str, str, bool]]


def row_changes(labels: LabelsResult, dedup: DedupResult) -> RowChanges:
    """(source, position) -> (label action, new label, kept row of a conflicting duplicate
    cluster) for rows the label review did not just keep, or that head such a cluster.
    """
    decisions = pq.read_table(labels.decisions_path, columns=[
        "source", "position", "action", "suggested_label"]).to_pandas()
    changed = decisions.loc[decisions["action"] != "keep"]
    changes = {(s, p): (a, lab, False) for s, p, a, lab in zip(
        changed["source"], changed["position"], changed["action"], changed["suggested_label"],
        strict=True)}
    for key in row_keys(dedup.conflicts_path):  # both flags when a row has both findings
        action, suggested, _ = changes.get(key, ("keep", "", False))
        changes[key] = (action, suggested, True)
    return changes


def apply_changes(frame: pd.DataFrame, changes: RowChanges) -> pd.DataFrame:
    """Relabel and flag rows as the label review decided; ``drop`` rows are already excluded."""
    labels, flags = [], []
    for key, label, row_flags in zip(zip(frame["source"], frame["position"], strict=True),
                                     frame["label"], frame["flags"], strict=True):
        action, suggested, conflicting = changes.get(key, ("keep", "", False))
        row_flags = list(row_flags) if row_flags is not None else []
        if action == "relabel":
            row_flags.append(f"relabelled_from:{label}")
            label = suggested
        elif action == "flag":
            row_flags.append("label_issue")
        if conflicting:
            row_flags.append("conflicting_duplicate")
        labels.append(label)
        flags.append(row_flags)
    return frame.assign(label=labels, flags=flags)


def _curate_partition(silver_file: str, drop_out: str, excluded: set[tuple[str, int]],
                      changes: RowChanges,
                      shares: SplitConfig) -> tuple[list[str], Counter[str]]:
    frame = pq.read_table(silver_file).to_pandas()
    keep = [key not in excluded for key in zip(frame["source"], frame["position"], strict=True)]
    curated = apply_changes(frame.loc[keep, SILVER_COLUMNS], changes).assign(
        split=lambda f: assign_split(f["id"], shares))
    name = f"{Path(silver_file).parent.name}-{Path(silver_file).stem}"  # silver/<drop>/<part>
    write_parquet(curated, Path(drop_out), CURATED_SCHEMA, name)
    digests = [row_digest(*row) for row in zip(curated["id"], curated["label"], curated["split"],
                                               curated["text"], curated["annotator_labels"],
                                               strict=True)]
    return digests, Counter(curated["split"])


def build_curated_snapshot(lake: Lake, drops: list[str], dedup: DedupResult,
                           labels: LabelsResult, shares: SplitConfig) -> SnapshotResult:
    """Drop logged duplicates and label-dropped rows, apply relabels, assign the split, write."""
    import dask

    excluded = row_keys(dedup.duplicates_path) | {
        key for drop in drops for key in row_keys(lake.quarantine(drop, "labels"))}
    changes = row_changes(labels, dedup)
    staged = lake.staging()
    (staged / "data").mkdir()
    parts = dask.compute(*[
        dask.delayed(_curate_partition)(f, str(staged / "data"), excluded, changes, shares)
        for f in lake.silver_files(drops)])
    digests = sorted(d for part, _ in parts for d in part)
    split_rows = {s: sum(counts[s] for _, counts in parts) for s in SPLITS}
    if not parts:
        write_parquet(pd.DataFrame(), staged / "data", CURATED_SCHEMA, "empty")
    digest = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    shutil.copytree(dedup.duplicates_path, staged / "duplicates")
    write_json(staged / "manifest.json", {
        "digest": digest, "rows": len(digests), "drops": drops, "split_rows": split_rows,
        "duplicates": dedup.duplicates, "created": datetime.now(UTC).isoformat(),
    })
    target = lake.snapshot(digest[:16])
    replace_dir(staged, target)
    return SnapshotResult(digest=digest, path=str(target), data_path=str(target / "data"),
                          duplicates_path=str(target / "duplicates"), rows=len(digests),
                          drops=drops, split_rows=split_rows)
