"""Dedup: exact, then near-duplicates, incrementally: a night hashes only its new rows.

Rules, in keep order (drop, id, source, position):
1. rows with the same ``text_hash`` (normalised text): the first is kept, the rest are logged;
2. an ``id`` that reappears with other text keeps its newest version (the later drop wins);
3. near-duplicates (MinHash LSH candidates whose EXACT Jaccard of word-shingle sets is ≥
   threshold) are logged as duplicates of their cluster's kept row. Only the candidate rows'
   texts are read back (from the silver partitions, by source and position) to verify them;
   rows are "related" (share a split) when the exact Jaccard or the MinHash estimate reaches
   ``related_threshold`` (either: keeping similar rows together never costs a split, and the
   leakage check, which only has signatures, counts pairs by the estimate).
A row once kept stays kept when later drops arrive, except when a newer drop reuses its id.
Clusters whose rows carry different labels are **conflicts** (a label-noise signal): written to
``dedup/conflicts/`` and the kept row is flagged ``conflicting_duplicate`` in the snapshot.

State lives in the lake, computed once per drop (``dedup_index/``): for every row its keys,
content hash, MinHash signature and LSH band keys, and the kept row of its cluster. A night
indexes only the drops it has not seen: their signatures are computed on the Dask workers, and
each worker scans the stored hashes, ids and band keys of some earlier drops for the new rows'
values (a broadcast join: the night's keys are small; the history's are read column by column,
never gathered), returning only the matching rows. The new rows are then decided against those
and among themselves, in one process whose memory grows with the drop, not the history.
A drop that sorts before an indexed one, a re-ingested drop or changed settings rebuild the
index, drop by drop with the same code.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig
from finegate.core.dedup_index import (
    INDEX_SCHEMA,
    INDEX_VERSION,
    KEEP_ORDER,
    KEY_COLUMNS,
    ROOT_COLUMNS,
    Rows,
    Sets,
    gather,
    minhash_config,
    read_shingle_sets,
    scan_index,
)
from finegate.core.lake import Lake, read_json, write_json
from finegate.core.minhash import MinhashConfig, band_keys, signatures
from finegate.core.near_dedup import UnionFind, candidate_pairs, exact_jaccard, uncertain
from finegate.core.results import DedupResult
from finegate.core.schemas import (
    CONFLICTS_SCHEMA,
    DUPLICATE_COLUMNS,
    DUPLICATES_SCHEMA,
    write_parquet,
    write_table,
)

# --- the index: which drops are in it, and whether it still matches the lake ---------------


def silver_fingerprint(lake: Lake, drop: str) -> str:
    """A digest of a drop's silver files (names, sizes, mtimes): changes when it is re-cleaned."""
    files = sorted(lake.silver(drop).glob("*.parquet"))
    listing = "\n".join(f"{f.name}\t{f.stat().st_size}\t{f.stat().st_mtime_ns}" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def index_settings(settings: DedupConfig) -> dict[str, Any]:
    """What the stored signatures and band keys depend on."""
    return {**settings.model_dump(), "index_version": INDEX_VERSION}


def drops_to_index(lake: Lake, drops: list[str], settings: DedupConfig) -> list[str]:
    """The drops tonight must index; clears the index first when it must be rebuilt."""
    state_path = lake.dedup_index / "state.json"
    state = read_json(state_path) if state_path.is_file() else {"settings": None, "drops": {}}
    indexed = state["drops"]
    fresh = {d: silver_fingerprint(lake, d) for d in drops}
    still_valid = (state["settings"] == index_settings(settings)
                   and all(d in fresh and fresh[d] == fp for d, fp in indexed.items()))
    new = [d for d in drops if d not in indexed]
    if still_valid and (not indexed or not new or min(new) > max(indexed)):
        clear_unindexed(lake, set(indexed))
        return new
    shutil.rmtree(lake.dedup_index, ignore_errors=True)
    shutil.rmtree(lake.dedup, ignore_errors=True)
    return list(drops)


def clear_unindexed(lake: Lake, indexed: set[str]) -> None:
    """Remove files a killed night wrote for drops it never recorded as indexed."""
    for folder in (lake.dedup_index / "rows", lake.dedup / "duplicates",
                   lake.dedup / "conflicts"):
        for path in folder.glob("*.parquet"):
            if path.stem not in indexed:
                path.unlink()


def record_indexed(lake: Lake, drop: str, settings: DedupConfig) -> None:
    """Mark ``drop`` as indexed: its rows, log and conflicts are on disk."""
    state_path = lake.dedup_index / "state.json"
    state = read_json(state_path) if state_path.is_file() else {"drops": {}}
    state["settings"] = index_settings(settings)
    state["drops"][drop] = silver_fingerprint(lake, drop)
    write_json(state_path, state)


# --- work on the Dask workers -------------------------------------------------------------


def hash_partition(silver_file: str, config: MinhashConfig) -> Rows:
    """Keys and MinHash signatures of one silver partition."""
    frame = pq.read_table(silver_file, columns=[*KEY_COLUMNS, "text"]).to_pandas()
    return Rows(frame[KEY_COLUMNS].astype(object), signatures(frame["text"].tolist(), config))


def hash_drop(lake: Lake, drop: str, config: MinhashConfig) -> Rows:
    """The new drop's keys and signatures, computed per partition on the cluster."""
    import dask

    parts = dask.compute(*[dask.delayed(hash_partition)(f, config)
                           for f in lake.silver_files([drop])])
    return gather(list(parts), config.num_perm)


def indexed_matches(lake: Lake, indexed: list[str], new: Rows, config: MinhashConfig) -> Rows:
    """Indexed rows of earlier drops that may duplicate a new row (scanned on the cluster)."""
    return scan_index(lake, indexed if len(new.keys) else [],
                      list(new.keys["text_hash"].unique()),
                      list(new.keys["id"].astype(str).unique()), new.signatures, config)


# --- deciding the new rows (one process; memory grows with the drop) ----------------------


ROOT_KEYS = ["root_id", "root_drop", "root_source", "root_position", "root_label"]


def root_records(old: Rows) -> pd.DataFrame:
    """The distinct kept rows of the old rows' clusters, in keep order."""
    roots = old.keys[ROOT_KEYS].drop_duplicates(["root_source", "root_position"])
    roots = roots.rename(columns={c: c.removeprefix("root_") for c in ROOT_KEYS})
    return roots.sort_values(KEEP_ORDER, kind="stable").reset_index(drop=True)


SetsOf = Callable[[pd.DataFrame], tuple[Sets, np.ndarray]]  # rows' keys -> sets, found


def decide(new: Rows, old: Rows, settings: DedupConfig, logged: set[tuple[str, int]],
           sets_of: SetsOf | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The duplicates found tonight (new rows, and old rows a newer version replaces), and
    for every new row the kept row of its cluster and its split anchor (``ROOT_COLUMNS``).
    ``sets_of`` gives the shingle sets of candidate rows for exact verification; without it
    (rows whose texts are unknown) candidates are verified on the MinHash estimate."""
    roots = root_records(old)
    n_roots = len(roots)
    node_of_root = {key: n for n, key in enumerate(zip(roots["source"], roots["position"],
                                                       strict=True))}
    old_node = np.array([node_of_root[k] for k in zip(old.keys["root_source"],
                                                      old.keys["root_position"], strict=True)],
                        dtype=np.int64)
    clusters = UnionFind(n_roots + len(new.keys))
    exact = link_exact(new, old, old_node, n_roots, clusters)
    superseded_new, superseded_old = superseded_ids(new, old, exact, logged)
    related = link_near(new, old, old_node, n_roots, clusters, settings,
                        skip=exact | superseded_new, sets_of=sets_of)
    nodes = pd.concat([roots, new.keys[KEY_COLUMNS[:-1]]], ignore_index=True).to_dict("records")
    found, root_of_new, anchors = [], [], split_anchors(new, old, related)
    for i, row in enumerate(new.keys.to_dict("records")):
        node = clusters.find(n_roots + i)
        root = nodes[node]
        anchor = anchors[node - n_roots] if node >= n_roots else anchor_of(old, root)
        root_of_new.append([root["id"], root["drop"], root["source"], root["position"],
                            root["label"], anchor])
        if superseded_new[i]:
            found.append(id_duplicate(row, new.keys))
        elif node != n_roots + i:
            found.append(content_duplicate(row, root, exact[i], settings.threshold,
                                           "" if sets_of is not None else "estimated "))
    found += [id_duplicate(r, new.keys) for r in superseded_old]
    duplicates = pd.DataFrame(found, columns=DUPLICATE_COLUMNS)
    return duplicates, pd.DataFrame(root_of_new, columns=ROOT_COLUMNS)


def anchor_of(old: Rows, root: dict[str, Any]) -> str:
    """The split anchor of an old cluster's kept row (its own id if it was not matched)."""
    same = (old.keys["source"] == root["source"]) & (old.keys["position"] == root["position"])
    return old.keys.loc[same, "split_anchor"].iloc[0] if same.any() else root["id"]


def split_anchors(new: Rows, old: Rows, related: list[tuple[int, int, bool]]) -> list[str]:
    """Per new row, the id whose split it takes: the anchor of the earliest earlier row it is
    related to (old rows first, in keep order), else its own id. Old rows never change."""
    earliest: dict[int, tuple[int, int, bool]] = {}
    for i, j, is_old in related:  # (new row, earlier row, whether the earlier row is old)
        rank = (0 if is_old else 1, j)
        if i not in earliest or rank < earliest[i][:2]:
            earliest[i] = (*rank, is_old)
    anchors: list[str] = []
    for i, row_id in enumerate(new.keys["id"].astype(str)):
        if i not in earliest:
            anchors.append(row_id)
        else:
            _, j, is_old = earliest[i]
            anchors.append(old.keys["split_anchor"].iloc[j] if is_old else anchors[j])
    return anchors


def find_duplicates(rows: Rows, settings: DedupConfig) -> pd.DataFrame:
    """The duplicates among one batch of rows (in keep order), with nothing indexed before."""
    none = Rows(pd.DataFrame(columns=[*KEY_COLUMNS, *ROOT_COLUMNS]),
                np.empty((0, settings.num_perm), np.uint32))
    return decide(rows, none, settings, set())[0]


def link_exact(new: Rows, old: Rows, old_node: np.ndarray, n_roots: int,
               clusters: UnionFind) -> np.ndarray:
    """Join every new row to the first earlier row with its content hash; True where joined."""
    first: dict[str, int] = {}
    for h, node in zip(old.keys["text_hash"], old_node, strict=True):
        first.setdefault(h, int(node))
    joined = np.zeros(len(new.keys), dtype=bool)
    for i, h in enumerate(new.keys["text_hash"]):
        if h in first:
            clusters.union(first[h], n_roots + i)
            joined[i] = True
        else:
            first[h] = n_roots + i
    return joined


def superseded_ids(new: Rows, old: Rows, exact: np.ndarray, logged: set[tuple[str, int]],
                   ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows whose id reappears with other text in a later row: the new rows and the kept old
    rows that the newest version replaces."""
    distinct = new.keys.loc[~exact]
    later = distinct.duplicated("id", keep="last")
    superseded_new = np.zeros(len(new.keys), dtype=bool)
    superseded_new[later.index[later.to_numpy()]] = True
    newest = distinct.drop_duplicates("id", keep="last").set_index("id")["text_hash"]
    old_rows = old.keys.loc[old.keys["id"].isin(newest.index)]
    superseded_old = [r for r in old_rows[KEY_COLUMNS].to_dict("records")
                      if (r["source"], r["position"]) not in logged
                      and r["text_hash"] != newest[r["id"]]]
    return superseded_new, superseded_old


def link_near(new: Rows, old: Rows, old_node: np.ndarray, n_roots: int, clusters: UnionFind,
              settings: DedupConfig, skip: np.ndarray, sets_of: SetsOf | None = None,
              ) -> list[tuple[int, int, bool]]:
    """Join new rows to the clusters of earlier rows they near-duplicate; return the related
    pairs (new row, earlier row, earlier row is old) for the split anchors."""
    config = minhash_config(settings)
    live = np.flatnonzero(~skip)
    new_keys = band_keys(new.signatures[live], config)
    old_pairs = (candidate_pairs(new_keys, band_keys(old.signatures, config)) if len(old.keys)
                 else np.empty((0, 2), np.int64))
    new_pairs = candidate_pairs(new_keys)
    duplicate_old, related_old, duplicate_new, related_new = verify_pairs(
        new, old, live, old_pairs, new_pairs, settings, sets_of)
    related: list[tuple[int, int, bool]] = []
    for (i, j), dup, rel in zip(old_pairs, duplicate_old, related_old, strict=True):
        if settings.near and dup:
            clusters.union(int(old_node[j]), n_roots + int(live[i]))
        if rel:
            related.append((int(live[i]), int(j), True))
    for (i, j), dup, rel in zip(new_pairs, duplicate_new, related_new, strict=True):
        if settings.near and dup:
            clusters.union(n_roots + int(live[i]), n_roots + int(live[j]))
        if rel:  # the later row takes the earlier's split
            related.append((int(live[j]), int(live[i]), False))
    return related


def verify_pairs(new: Rows, old: Rows, live: np.ndarray, old_pairs: np.ndarray,
                 new_pairs: np.ndarray, settings: DedupConfig, sets_of: SetsOf | None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the candidate pairs (new, old) and (new, new): near duplicate, and related.

    Near duplicate: exact Jaccard ≥ ``threshold``. Related: exact Jaccard or estimate ≥
    ``related_threshold``. The exact Jaccard is computed (texts read) only for pairs whose
    estimate is within ``EXACT_MARGIN`` of the thresholds (:func:`uncertain`); the estimate is
    kept elsewhere and where a row's text is not available."""
    sig = new.signatures[live]
    estimate_old = (sig[old_pairs[:, 0]] == old.signatures[old_pairs[:, 1]]).mean(axis=1) \
        if len(old_pairs) else np.empty(0)
    estimate_new = (sig[new_pairs[:, 0]] == sig[new_pairs[:, 1]]).mean(axis=1) \
        if len(new_pairs) else np.empty(0)
    exact_old, exact_new = estimate_old, estimate_new
    low, high = settings.related_threshold, settings.threshold
    check_old = uncertain(estimate_old, low, high)  # only these pairs' texts are read
    check_new = uncertain(estimate_new, low, high)
    if sets_of is not None and (check_old.any() or check_new.any()):
        new_rows = np.unique(np.concatenate([old_pairs[check_old, 0],
                                             new_pairs[check_new].ravel()]))
        old_rows = np.unique(old_pairs[check_old, 1])
        keys = pd.concat([new.keys.iloc[live[new_rows]], old.keys.iloc[old_rows]],
                         ignore_index=True)[["drop", "source", "position"]]
        sets, found = sets_of(keys)
        new_at = np.full(len(live), -1, np.int64)
        new_at[new_rows] = np.arange(len(new_rows))
        old_at = np.full(len(old.keys), -1, np.int64)
        old_at[old_rows] = len(new_rows) + np.arange(len(old_rows))
        exact_old = _exact_where(estimate_old, check_old, sets, found, np.stack(
            [new_at[old_pairs[:, 0]], old_at[old_pairs[:, 1]]], axis=1))
        exact_new = _exact_where(estimate_new, check_new, sets, found, new_at[new_pairs])
    return (exact_old >= settings.threshold, np.maximum(exact_old, estimate_old) >= low,
            exact_new >= settings.threshold, np.maximum(exact_new, estimate_new) >= low)


def _exact_where(estimate: np.ndarray, check: np.ndarray, sets: Sets, found: np.ndarray,
                 at: np.ndarray) -> np.ndarray:
    """The estimate, replaced by the exact Jaccard on the checked pairs whose texts were found
    (``at``: each pair's two positions in ``sets``)."""
    result = estimate.copy()
    rows = np.flatnonzero(check)
    rows = rows[found[at[rows]].all(axis=1)]
    if len(rows):
        result[rows] = exact_jaccard(sets, sets, at[rows])
    return result


def content_duplicate(row: dict[str, Any], root: dict[str, Any], exact: bool,
                      threshold: float, measure: str = "") -> dict[str, Any]:
    """The log entry of a row that repeats the content of its cluster's kept row."""
    if exact:
        return {**row, "duplicate_of": root["id"], "cluster": "exact-" + row["text_hash"][:16],
                "reason": "exact duplicate (same normalised text)"}
    return {**row, "duplicate_of": root["id"], "cluster": f"near-{root['id']}",
            "reason": f"near duplicate ({measure}Jaccard >= {threshold})"}


def id_duplicate(row: dict[str, Any], new_keys: pd.DataFrame) -> dict[str, Any]:
    """The log entry of a row whose id a later version reuses with other text."""
    newest = new_keys.loc[new_keys["id"] == row["id"], "drop"].iloc[-1]
    return {**row, "duplicate_of": row["id"], "cluster": f"id-{row['id']}",
            "reason": f"id reused with other text; the version in drop {newest} is kept"}


# --- writing the night's findings, and the stage ------------------------------------------


def index_table(new: Rows, roots: pd.DataFrame, config: MinhashConfig) -> pa.Table:
    """The new drop's index rows: keys, roots, band keys (one column each), signatures."""
    frame = pd.concat([new.keys.reset_index(drop=True), roots], axis=1)
    table = pa.Table.from_pandas(frame, schema=INDEX_SCHEMA, preserve_index=False)
    keys = band_keys(new.signatures, config) if len(new.keys) else \
        np.empty((0, config.banding[0]), np.uint64)
    for band in range(keys.shape[1]):
        table = table.append_column(f"band_{band:02d}", pa.array(keys[:, band]))
    flat = pa.array(new.signatures.astype(np.uint32).ravel())
    return table.append_column("signature",
                               pa.FixedSizeListArray.from_arrays(flat, config.num_perm))


def conflicts_of(duplicates: pd.DataFrame, roots: pd.DataFrame, log: Path) -> pd.DataFrame:
    """Kept rows whose content cluster, including tonight's rows, holds more than one label."""
    content = duplicates.loc[~duplicates["cluster"].str.startswith("id-")]
    if content.empty:
        return pd.DataFrame(columns=CONFLICTS_SCHEMA.names)
    earlier = (pq.read_table(log, columns=["duplicate_of", "label", "cluster"]).to_pandas()
               if any(log.glob("*.parquet")) else pd.DataFrame(columns=["duplicate_of", "label"]))
    members = pd.concat([earlier, content[["duplicate_of", "label"]]])
    labels = members.groupby("duplicate_of")["label"].agg(set)
    kept = roots.drop_duplicates("root_id").set_index("root_id")
    records = []
    for root_id, cluster in content.drop_duplicates("duplicate_of")[
            ["duplicate_of", "cluster"]].itertuples(index=False):
        root = kept.loc[root_id] if root_id in kept.index else None
        every = labels[root_id] | ({root["root_label"]} if root is not None else set())
        if root is not None and len(every) > 1:
            records.append({"source": root["root_source"], "position": root["root_position"],
                            "id": root_id, "drop": root["root_drop"], "cluster": cluster,
                            "labels": sorted(every)})
    return pd.DataFrame(records, columns=CONFLICTS_SCHEMA.names)


def logged_rows(lake: Lake) -> set[tuple[str, int]]:
    """(source, position) of every row the dedup log already removes."""
    log = lake.dedup / "duplicates"
    if not any(log.glob("*.parquet")):
        return set()
    table = pq.read_table(log, columns=["source", "position"]).to_pandas()
    return set(zip(table["source"], table["position"], strict=True))


def index_drop(lake: Lake, drop: str, indexed: list[str], settings: DedupConfig) -> int:
    """Decide one new drop against the indexed ones; write its log, conflicts and index rows.
    Returns the rows hashed."""
    config = minhash_config(settings)
    new = hash_drop(lake, drop, config)
    old = indexed_matches(lake, indexed, new, config)
    duplicates, roots = decide(new, old, settings, logged_rows(lake),
                               lambda keys: read_shingle_sets(lake, keys, settings.shingle_size))
    all_roots = pd.concat([roots, old.keys[ROOT_COLUMNS]], ignore_index=True)
    conflicts = conflicts_of(duplicates, all_roots, lake.dedup / "duplicates")
    write_parquet(duplicates, lake.dedup / "duplicates", DUPLICATES_SCHEMA, drop)
    write_parquet(conflicts, lake.dedup / "conflicts", CONFLICTS_SCHEMA, drop)
    write_table(index_table(new, roots, config), lake.dedup_index / "rows" / f"{drop}.parquet")
    return len(new.keys)


def dedup_drops(lake: Lake, drops: list[str], settings: DedupConfig) -> DedupResult:
    """Deduplicate the history incrementally: index the drops not yet indexed, each against
    the earlier ones; return the counts over the whole history."""
    new = drops_to_index(lake, sorted(drops), settings)
    indexed = [d for d in sorted(drops) if d not in new]
    hashed = 0
    for drop in new:
        hashed += index_drop(lake, drop, indexed, settings)
        record_indexed(lake, drop, settings)
        indexed.append(drop)
    for folder in ("duplicates", "conflicts"):
        (lake.dedup / folder).mkdir(parents=True, exist_ok=True)
    return summarise(lake, hashed)


def summarise(lake: Lake, hashed: int) -> DedupResult:
    """Counts over the whole log and index (log and conflicts are small; the index is counted
    from Parquet footers)."""
    log = lake.dedup / "duplicates"
    clusters = (pq.read_table(log, columns=["cluster"]).column("cluster").to_pylist()
                if any(log.glob("*.parquet")) else [])
    near = sum(c.startswith("near-") for c in clusters)
    conflicts_dir = lake.dedup / "conflicts"
    conflicts = (pq.read_table(conflicts_dir, columns=["source", "position"]).to_pandas()
                 .drop_duplicates() if any(conflicts_dir.glob("*.parquet")) else [])
    rows = sum(pq.read_metadata(f).num_rows for f in (lake.dedup_index / "rows").glob("*.parquet"))
    return DedupResult(duplicates_path=str(log), conflicts_path=str(conflicts_dir), rows_in=rows,
                       exact_duplicates=len(clusters) - near, near_duplicates=near,
                       conflicts=len(conflicts), rows_hashed=hashed)
