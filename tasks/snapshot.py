"""Snapshot: the curated dataset, named by the digest of its content.

Writes ``curated/snapshots/<digest[:16]>/`` with ``data/`` (the curated rows with their split
and, under kfold, fold; relabels and flags of the label review applied; one file per silver
partition), ``duplicates/`` (the dedup log that run used) and ``manifest.json`` (with the split
strategy, its shares and, under time, the test and validation drops).

Splits follow ``split.strategy`` (:mod:`finegate.core.splits`): ``hash`` and ``kfold`` are
decided per row from its split anchor on the workers; ``stratified`` and ``time`` are planned
over every row's keys first (the plan's digest is part of each partition's key).

A snapshot grows by appending: a partition whose inputs did not change since the previous
snapshot (its silver file, the duplicates, label decisions and conflicts of its drop, the split
settings and plan) is hard-linked from it instead of rewritten; the manifest keeps each
partition's input key, rows, rows per split and content sum. The digest is exact and
reproducible: an order-independent sum (mod 2**256) of every row's SHA-256, so the same
curated rows always give the same digest however they are partitioned, and an unchanged
snapshot needs no retraining.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import SplitConfig
from finegate.core.dedup_index import index_file
from finegate.core.lake import Lake, read_json, replace_dir, write_json
from finegate.core.results import DedupResult, LabelsResult, SnapshotResult
from finegate.core.schemas import CURATED_SCHEMA, SILVER_COLUMNS, row_keys, write_parquet
from finegate.core.splits import (
    SPLITS,
    assign_split,
    fold_of,
    kfold_split,
    stratified_splits,
    time_splits,
)


def row_digest(row_id: str, label: str, split: str, text: str, annotators: object,
               fold: object = None) -> str:
    """Digest of everything a curated row contributes to training (the fold only under
    ``kfold``, so the other strategies keep their digests)."""
    values = [row_id, label, split, text, annotators] + ([int(fold)] if pd.notna(fold) else [])
    payload = json.dumps(values, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()


SNAPSHOT_FORMAT = 4  # part of every partition's input key: a new format rewrites them all
# (source, position) -> (action, new label, conflicting duplicate, human review lineage flags)
RowChanges = dict[tuple[str, int], tuple[str, str, bool, tuple[str, ...]]]
Assigned = dict[tuple[str, int], str]  # (source, position) -> split, planned over the snapshot
PLANNED = ("stratified", "time")  # strategies that look at the whole snapshot


def row_changes(labels: LabelsResult, dedup: DedupResult) -> dict[str, RowChanges]:
    """Per drop: (source, position) -> (label action, new label, kept row of a conflicting
    duplicate cluster) for rows the label review did not just keep, or that head such a cluster.
    """
    decisions = pq.read_table(labels.decisions_path, columns=[
        "source", "position", "drop", "action", "suggested_label", *HUMAN_LINEAGE]).to_pandas()
    human = decisions["human_label"].notna()
    changed = decisions.loc[(decisions["action"] != "keep") | human]
    changes: dict[str, RowChanges] = defaultdict(dict)
    for row in changed.itertuples(index=False):
        if pd.notna(row.human_label):  # a person's review beats the model's action
            changes[row.drop][(row.source, row.position)] = (
                "human", row.human_label, False, review_lineage(row))
        else:
            changes[row.drop][(row.source, row.position)] = (
                row.action, row.suggested_label, False, ())
    conflicts = pq.read_table(dedup.conflicts_path, columns=["source", "position", "drop"])
    for s, p, d in zip(*(conflicts[c].to_pylist() for c in ("source", "position", "drop")),
                       strict=True):  # both flags when a row has both findings
        action, suggested, _, review = changes[d].get((s, p), ("keep", "", False, ()))
        changes[d][(s, p)] = (action, suggested, True, review)
    return changes


HUMAN_LINEAGE = ["human_label", "reviewed_by", "review_queue", "annotated_at"]


def review_lineage(row: Any) -> tuple[str, ...]:
    """The flags that keep a human review's lineage on a curated row: who, from which queue,
    when."""
    names = list(row.reviewed_by) if row.reviewed_by is not None else []
    flags = ["human_review"]
    if names:
        flags.append(f"reviewed_by:{'+'.join(names)}")
    # optional in a review drop: a null string reads back as NaN, which is truthy
    if isinstance(row.review_queue, str) and row.review_queue:
        flags.append(f"review_queue:{row.review_queue}")
    if isinstance(row.annotated_at, str) and row.annotated_at:
        flags.append(f"annotated_at:{row.annotated_at}")
    return tuple(flags)


def excluded_rows(lake: Lake, drops: list[str], dedup: DedupResult,
                  ) -> dict[str, set[tuple[str, int]]]:
    """Per drop, the rows the snapshot leaves out: logged duplicates and label-dropped rows."""
    log = pq.read_table(dedup.duplicates_path, columns=["source", "position", "drop"])
    excluded: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for s, p, d in zip(*(log[c].to_pylist() for c in ("source", "position", "drop")),
                       strict=True):
        excluded[d].add((s, p))
    for drop in drops:
        excluded[drop] |= row_keys(lake.quarantine(drop, "labels"))
    return excluded


def partition_key(silver_file: str, index_file: str, excluded: set[tuple[str, int]],
                  changes: RowChanges, shares: SplitConfig, assigned: Assigned | None) -> str:
    """Everything a curated partition is made from: equal keys give equal partitions."""
    files = [(Path(f).name, os.stat(f).st_size, os.stat(f).st_mtime_ns)
             for f in (silver_file, index_file) if os.path.exists(f)]
    planned = hashlib.sha256(json.dumps(sorted(assigned.items())).encode()).hexdigest() \
        if assigned is not None else None
    payload = json.dumps([SNAPSHOT_FORMAT, files, sorted(excluded), sorted(changes.items()),
                          shares.model_dump(), planned], default=list)
    return hashlib.sha256(payload.encode()).hexdigest()


def apply_changes(frame: pd.DataFrame, changes: RowChanges) -> pd.DataFrame:
    """Relabel and flag rows as the label review (or a person's review) decided; ``drop`` rows
    are already excluded."""
    labels, flags = [], []
    for key, label, row_flags in zip(zip(frame["source"], frame["position"], strict=True),
                                     frame["label"], frame["flags"], strict=True):
        action, suggested, conflicting, review = changes.get(key, ("keep", "", False, ()))
        row_flags = list(row_flags) if row_flags is not None else []
        if action == "human":
            row_flags += review
            if suggested != label:
                row_flags.append(f"human_relabelled_from:{label}")
                label = suggested
        elif action == "relabel":
            row_flags.append(f"relabelled_from:{label}")
            label = suggested
        elif action == "flag":
            row_flags.append("label_issue")
        if conflicting:
            row_flags.append("conflicting_duplicate")
        labels.append(label)
        flags.append(row_flags)
    return frame.assign(label=labels, flags=flags)


def partition_name(silver_file: str) -> str:
    """The curated partition of a silver file: ``<drop>-<part>``."""
    return f"{Path(silver_file).parent.name}-{Path(silver_file).stem}"


def split_anchors(index_file: str, frame: pd.DataFrame) -> pd.Series:
    """Per row, the id whose split it takes (its own, or an earlier related row's: rows the
    dedup stage relates share a split); the row's own id where the index has none."""
    if not os.path.exists(index_file):
        return frame["id"]
    index = pq.read_table(index_file, columns=["source", "position", "split_anchor"])
    anchor = dict(zip(zip(index["source"].to_pylist(), index["position"].to_pylist(),
                          strict=True), index["split_anchor"].to_pylist(), strict=True))
    return pd.Series([anchor.get(key, row_id) for key, row_id in zip(
        zip(frame["source"], frame["position"], strict=True), frame["id"], strict=True)],
        index=frame.index, dtype=object)


def assign_rows(curated: pd.DataFrame, anchors: pd.Series, shares: SplitConfig,
                assigned: Assigned | None) -> pd.DataFrame:
    """The rows with their split (planned, or from their anchor) and, under kfold, fold."""
    fold = pd.Series(pd.NA, index=curated.index, dtype="Int64")
    if assigned is not None:
        split = pd.Series([assigned[k] for k in zip(curated["source"], curated["position"],
                                                    strict=True)], index=curated.index)
    elif shares.strategy == "kfold":
        fold = pd.Series([fold_of(a, shares.folds) for a in anchors], index=curated.index,
                         dtype="Int64")
        split = fold.map(lambda f: kfold_split(f, shares.folds)).astype(object)
    else:
        split = assign_split(anchors, shares)
    return curated.assign(split=split, fold=fold)


def curate_partition(silver_file: str, index_file: str, out: str,
                     excluded: set[tuple[str, int]], changes: RowChanges,
                     shares: SplitConfig, assigned: Assigned | None = None) -> dict[str, Any]:
    """Write one curated partition; its rows, rows per split and content sum (runs on a
    Dask worker). ``assigned``: the splits planned over the whole snapshot, if any."""
    frame = pq.read_table(silver_file).to_pandas()
    keep = [key not in excluded for key in zip(frame["source"], frame["position"], strict=True)]
    curated = apply_changes(frame.loc[keep, SILVER_COLUMNS], changes)
    curated = assign_rows(curated, split_anchors(index_file, curated), shares, assigned)
    write_parquet(curated, Path(out), CURATED_SCHEMA, partition_name(silver_file))
    total = sum(int(row_digest(*row), 16) for row in zip(
        curated["id"], curated["label"], curated["split"], curated["text"],
        curated["annotator_labels"], curated["fold"], strict=True)) % 2**256
    counts = Counter(curated["split"])
    return {"rows": len(curated), "split_rows": {s: counts[s] for s in SPLITS},
            "sum": f"{total:064x}"}


def previous_partitions(lake: Lake) -> tuple[Path | None, dict[str, Any]]:
    """The data folder and partition records of the last snapshot built, if any."""
    latest = lake.latest_snapshot
    if not latest.is_file():
        return None, {}
    folder = lake.snapshots / read_json(latest)["snapshot"]
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None, {}
    return folder / "data", read_json(manifest).get("partitions", {})


def snapshot_digest(partitions: dict[str, Any]) -> str:
    """SHA-256 of the sum of all row digests and the row count: independent of partitioning."""
    total = sum(int(p["sum"], 16) for p in partitions.values()) % 2**256
    rows = sum(p["rows"] for p in partitions.values())
    return hashlib.sha256(f"{total:064x}:{rows}".encode()).hexdigest()


def build_curated_snapshot(lake: Lake, drops: list[str], dedup: DedupResult,
                           labels: LabelsResult, shares: SplitConfig) -> SnapshotResult:
    """Drop logged duplicates and label-dropped rows, apply relabels, assign the split, write;
    partitions whose inputs did not change are linked from the previous snapshot."""
    import dask

    excluded, changes = excluded_rows(lake, drops, dedup), row_changes(labels, dedup)
    plan, split_info = plan_splits(lake, drops, excluded, changes, shares)
    previous_data, previous = previous_partitions(lake)
    staged = lake.staging()
    data = staged / "data"
    data.mkdir()
    partitions, jobs = {}, {}
    for drop in drops:
        for silver_file in lake.silver_files([drop]):
            name = partition_name(silver_file)
            index = index_file(lake, drop)
            assigned = plan.get(drop) if shares.strategy in PLANNED else None
            key = partition_key(silver_file, index, excluded[drop], changes[drop], shares,
                                assigned)
            old = previous.get(name)
            if old and old["key"] == key and (previous_data / f"{name}.parquet").is_file():
                os.link(previous_data / f"{name}.parquet", data / f"{name}.parquet")
                partitions[name] = old
            else:
                jobs[name] = (key, dask.delayed(curate_partition)(
                    silver_file, index, str(data), excluded[drop], changes[drop], shares,
                    assigned))
    built = dask.compute(*[job for _, job in jobs.values()])
    for (name, (key, _)), record in zip(jobs.items(), built, strict=True):
        partitions[name] = {**record, "key": key}
    if not partitions:
        write_parquet(pd.DataFrame(), data, CURATED_SCHEMA, "empty")
    return finish_snapshot(lake, staged, drops, dedup, dict(sorted(partitions.items())),
                           reused=len(partitions) - len(jobs), split_info=split_info)


def split_rows_of(lake: Lake, drops: list[str], excluded: dict[str, set[tuple[str, int]]],
                  changes: dict[str, RowChanges]) -> pd.DataFrame:
    """Keys, label (relabels applied), drop and split anchor of every row the snapshot will
    hold, in keep order (no texts are read)."""
    frames = []
    for drop in drops:
        for silver_file in lake.silver_files([drop]):
            frame = pq.read_table(silver_file, columns=[
                "id", "label", "source", "position", "drop"]).to_pandas()
            keys = list(zip(frame["source"], frame["position"], strict=True))
            frame = frame.loc[[k not in excluded[drop] for k in keys]]
            relabel = {k: new for k, (action, new, *_) in changes[drop].items()
                       if action in ("relabel", "human")}
            frame["label"] = [relabel.get(k, lab) for k, lab in zip(
                zip(frame["source"], frame["position"], strict=True), frame["label"],
                strict=True)]
            frames.append(frame.assign(anchor=split_anchors(index_file(lake, drop), frame)))
    columns = ["id", "label", "source", "position", "drop", "anchor"]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return rows.sort_values(["drop", "id", "source", "position"], kind="stable",
                            ignore_index=True)


def previous_splits(lake: Lake, shares: SplitConfig) -> dict[tuple[str, int], str]:
    """(source, position) -> split of the rows of the newest snapshot built with the same
    split settings; empty when there is none (the splits are then derived afresh)."""
    built = [(manifest.get("created", ""), path.parent) for path in
             lake.snapshots.glob("*/manifest.json") if (manifest := read_json(path))
             .get("split", {}).get("settings") == shares.model_dump()]
    if not built:
        return {}
    folder = max(built)[1]
    table = pq.read_table(folder / "data", columns=["source", "position", "split"])
    return dict(zip(zip(table["source"].to_pylist(), table["position"].to_pylist(),
                        strict=True), table["split"].to_pylist(), strict=True))


def data_drops(lake: Lake, drops: list[str]) -> list[str]:
    """The drops that bring data, in name order: not review drops (every row a person's
    review, flagged ``human_review`` at ingest), which answer questions about older rows."""
    def is_review(drop: str) -> bool:
        flags = [f for path in lake.silver_files([drop])
                 for f in pq.read_table(path, columns=["flags"])["flags"].to_pylist()]
        return bool(flags) and all(f is not None and "human_review" in f for f in flags)
    return sorted(d for d in set(drops) if not is_review(d))


def plan_splits(lake: Lake, drops: list[str], excluded: dict[str, set[tuple[str, int]]],
                changes: dict[str, RowChanges], shares: SplitConfig,
                ) -> tuple[dict[str, Assigned], dict[str, Any]]:
    """Per drop, the split of each row under a strategy that looks at the whole snapshot
    (stratified, time), and what the manifest records about the split."""
    info: dict[str, Any] = {"strategy": shares.strategy, "settings": shares.model_dump()}
    if shares.strategy == "kfold":
        k = shares.folds
        info["shares"] = {"train": (k - 2) / k, "validation": 1 / k, "test": 1 / k}
    elif shares.strategy != "time":
        info["shares"] = shares.shares()
    if shares.strategy not in PLANNED:
        return {}, info
    rows = split_rows_of(lake, drops, excluded, changes)
    if shares.strategy == "stratified":
        split = stratified_splits(rows, previous_splits(lake, shares), shares)
    elif len(data := data_drops(lake, drops)) > shares.test_drops + shares.validation_drops:
        split, chosen = time_splits(rows, data, shares)
        info.update(chosen)
    else:  # too few drops to hold the newest out: hash until there are enough
        split = assign_split(rows["anchor"], shares)
        info.update(shares=shares.shares(), fallback=(
            f"time needs more than {shares.test_drops + shares.validation_drops} data "
            f"drop(s), the snapshot has {len(data)}: split by hash of the anchor until then"))
    plan: dict[str, Assigned] = defaultdict(dict)
    for drop, source, position, s in zip(rows["drop"], rows["source"], rows["position"], split,
                                         strict=True):
        plan[drop][(source, int(position))] = s
    return plan, info


def finish_snapshot(lake: Lake, staged: Path, drops: list[str], dedup: DedupResult,
                    partitions: dict[str, Any], reused: int,
                    split_info: dict[str, Any]) -> SnapshotResult:
    """Copy the dedup log in, write the manifest, move the snapshot to its digest's folder."""
    digest = snapshot_digest(partitions)
    rows = sum(p["rows"] for p in partitions.values())
    split_rows = {s: sum(p["split_rows"][s] for p in partitions.values()) for s in SPLITS}
    shutil.copytree(dedup.duplicates_path, staged / "duplicates")
    write_json(staged / "manifest.json", {
        "digest": digest, "rows": rows, "drops": drops, "split_rows": split_rows,
        "duplicates": dedup.duplicates, "created": datetime.now(UTC).isoformat(),
        "partitions_reused": reused, "split": split_info, "partitions": partitions,
    })
    target = lake.snapshot(digest[:16])
    replace_dir(staged, target)
    write_json(lake.latest_snapshot, {"snapshot": digest[:16]})
    return SnapshotResult(digest=digest, path=str(target), data_path=str(target / "data"),
                          duplicates_path=str(target / "duplicates"), rows=rows,
                          drops=drops, split_rows=split_rows)
