"""Leakage: golden rows that the snapshot also holds, exactly or nearly, in any split; and
rows of the snapshot that repeat each other across its splits.

A golden row that duplicates a training row inflates the score promotion is decided on. Every
night the golden set (``evaluation.golden_path``) is hashed like the nightly data (content hash
and MinHash, the dedup settings) and looked up in the dedup index on the Dask workers, the way
dedup looks up a new drop; exact copies and near duplicates (exact Jaccard ≥ ``dedup.threshold``,
the found rows' texts read back from silver as dedup does) still in the
snapshot are leaks, named pair by pair in
``leakage.json`` beside the snapshot. The scorecard carries ``golden_train_leaks`` (golden rows
found in the train split) for the gate, and evaluation leaves leaked golden rows out.

Cross-split leakage is measured on the snapshot itself, with the dedup index's stored content
hashes, band keys and signatures (the same engine): pairs of snapshot rows in different splits
with the same content hash (exact) or an estimated Jaccard at or above
``dedup.related_threshold`` (near: the similarity at which rows are meant to share a split).
They are counted per pair of splits and named in ``leakage.json`` (``cross_split_pairs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig, LabelSet
from finegate.core.dedup_index import (
    Rows,
    Sets,
    index_file,
    minhash_config,
    read_shingle_sets,
    scan_index,
)
from finegate.core.inference import read_golden
from finegate.core.lake import Lake, write_json
from finegate.core.minhash import (
    MinhashConfig,
    band_keys,
    estimated_jaccard,
    shingle_sets,
    signatures,
)
from finegate.core.near_dedup import candidate_pairs, exact_jaccard
from finegate.core.results import LeakageResult, SnapshotResult
from finegate.core.splits import SPLITS
from finegate.core.text import text_hash

SHOWN_CHARS = 200
PAIRS_LISTED = 500  # cross-split pairs named in leakage.json (all are counted)


def matching_pairs(texts: list[str], found: Rows, config: MinhashConfig, threshold: float,
                   found_sets: tuple[Sets, np.ndarray] | None = None,
                   ) -> list[tuple[int, int, str, float]]:
    """(golden row, found row, exact|near, similarity) for every match at ``threshold``.
    Near: LSH candidates whose exact Jaccard of shingle sets reaches ``threshold`` (the found
    rows' sets in ``found_sets``, with whether each was found), as the dedup stage decides;
    the MinHash estimate where a found row's text is unknown."""
    hashes = [text_hash(t) for t in texts]
    golden = signatures(texts, config)
    pairs = {(g, f): ("exact", 1.0) for g, h in enumerate(hashes)
             for f in np.flatnonzero(found.keys["text_hash"].to_numpy() == h)}
    if len(found.keys):
        candidates = candidate_pairs(band_keys(golden, config), band_keys(found.signatures,
                                                                          config))
        if len(candidates):
            similarity = estimated_jaccard(golden[candidates[:, 0]],
                                           found.signatures[candidates[:, 1]])
            if found_sets is not None:
                sets, known = found_sets
                exact = exact_jaccard(shingle_sets(texts, config.shingle_size), sets, candidates)
                similarity = np.where(known[candidates[:, 1]], exact, similarity)
            for (g, f), sim in zip(candidates, similarity, strict=True):
                if sim >= threshold:
                    pairs.setdefault((int(g), int(f)), ("near", float(sim)))
    return sorted((g, int(f), kind, sim) for (g, f), (kind, sim) in pairs.items())


def snapshot_rows(data_path: str, ids: list[str]) -> dict[tuple[str, int], str]:
    """(source, position) -> split of the snapshot rows with these ids (only those are kept
    in memory)."""
    if not ids:
        return {}
    table = pq.read_table(data_path, columns=["source", "position", "split"],
                          filters=[("id", "in", sorted(set(ids)))])
    return dict(zip(zip(table["source"].to_pylist(), table["position"].to_pylist(),
                        strict=True), table["split"].to_pylist(), strict=True))


def check_leakage(lake: Lake, snapshot: SnapshotResult, golden_path: str, label_set: LabelSet,
                  settings: DedupConfig) -> LeakageResult:
    """Find golden rows in the snapshot; write ``leakage.json`` beside it."""
    path = Path(snapshot.path) / "leakage.json"
    cross = cross_split_pairs(lake, snapshot, settings)
    if not golden_path:
        return write_leakage(path, 0, [], cross)
    config = minhash_config(settings)
    texts, _ = read_golden(golden_path, label_set)
    found = scan_index(lake, snapshot.drops, [text_hash(t) for t in texts], [],
                       signatures(texts, config), config)
    in_snapshot = snapshot_rows(snapshot.data_path, found.keys["id"].astype(str).tolist())
    pairs = []
    found_sets = read_shingle_sets(lake, found.keys[["drop", "source", "position"]],
                                   settings.shingle_size)
    for g, f, kind, similarity in matching_pairs(texts, found, config, settings.threshold,
                                                 found_sets):
        row = found.keys.iloc[f]
        split = in_snapshot.get((row["source"], int(row["position"])))
        if split is not None:  # a duplicate the snapshot dropped is no leak
            pairs.append(leak_record(g, texts[g], row, split, kind, similarity))
    return write_leakage(path, len(texts), pairs, cross)


def leak_record(golden: int, text: str, row: Any, split: str, kind: str,
                similarity: float) -> dict[str, Any]:
    """One golden row and the snapshot row it leaks into."""
    return {"golden_row": golden, "golden_text": text[:SHOWN_CHARS], "id": row["id"],
            "drop": row["drop"], "source": row["source"], "position": int(row["position"]),
            "split": split, "kind": kind, "similarity": round(similarity, 4)}


def write_leakage(path: Path, golden_rows: int, pairs: list[dict[str, Any]],
                  cross: pd.DataFrame) -> LeakageResult:
    """Write the golden pairs and counts per split, and the cross-split pairs; golden rows in
    train are the ones to leave out of the golden metric."""
    by_split = {s: len({p["golden_row"] for p in pairs if p["split"] == s}) for s in SPLITS}
    leaked = sorted({p["golden_row"] for p in pairs})
    by_splits = {k: int(n) for k, n in cross["splits"].value_counts().sort_index().items()}
    exact, near = int((cross["kind"] == "exact").sum()), int((cross["kind"] == "near").sum())
    write_json(path, {"golden_rows": golden_rows, "pairs": pairs, "leaked_by_split": by_split,
                      "leaked_golden": leaked, "cross_split_exact": exact,
                      "cross_split_near": near, "cross_split_by_splits": by_splits,
                      "cross_split_pairs": cross.head(PAIRS_LISTED).to_dict("records")})
    return LeakageResult(leakage_path=str(path), golden_rows=golden_rows,
                         leaked_by_split=by_split, leaked_golden=leaked,
                         cross_split_exact=exact, cross_split_near=near,
                         cross_split_by_splits=by_splits)


CROSS_COLUMNS = ["id_a", "split_a", "id_b", "split_b", "splits", "kind", "similarity"]


def indexed_snapshot_rows(lake: Lake, snapshot: SnapshotResult) -> pd.DataFrame:
    """The index rows (id, drop, row in its index file, content hash, band keys) of the rows
    the snapshot holds, with their split."""
    in_snapshot = pq.read_table(snapshot.data_path, columns=["source", "position", "split"]
                                ).to_pandas()
    frames = []
    for drop in snapshot.drops:
        if not Path(index_file(lake, drop)).is_file():
            continue
        names = pq.read_schema(index_file(lake, drop)).names
        bands = [c for c in names if c.startswith("band_")]
        frame = pq.read_table(index_file(lake, drop), columns=[
            "id", "source", "position", "text_hash", *bands]).to_pandas()
        frames.append(frame.assign(drop=drop, row=np.arange(len(frame))))
    if not frames:
        return pd.DataFrame(columns=["id", "drop", "row", "text_hash", "split"])
    rows = pd.concat(frames, ignore_index=True)
    return rows.merge(in_snapshot, on=["source", "position"]).reset_index(drop=True)


def indexed_signatures(lake: Lake, rows: pd.DataFrame) -> np.ndarray:
    """The stored MinHash signatures of ``rows`` (columns drop, row), in their order."""
    out = None
    for drop, part in rows.groupby("drop"):
        table = pq.read_table(index_file(lake, drop), columns=["signature"])
        column = table["signature"].combine_chunks()
        taken = column.take(part["row"].to_numpy()).flatten().to_numpy()
        matrix = taken.reshape(len(part), -1)
        if out is None:
            out = np.zeros((len(rows), matrix.shape[1]), np.uint32)
        out[rows.index.get_indexer(part.index)] = matrix
    return out if out is not None else np.empty((0, 0), np.uint32)


def cross_split_pairs(lake: Lake, snapshot: SnapshotResult, settings: DedupConfig,
                      ) -> pd.DataFrame:
    """Pairs of snapshot rows in different splits that share a content hash (exact) or whose
    estimated Jaccard reaches ``dedup.related_threshold`` (near); most similar first."""
    rows = indexed_snapshot_rows(lake, snapshot)
    split = rows["split"].to_numpy()
    found: dict[tuple[int, int], tuple[str, float]] = {}
    for _, group in rows.loc[rows["text_hash"].duplicated(keep=False)].groupby("text_hash"):
        members = group.index.to_numpy()
        for a, b in zip(*np.triu_indices(len(members), k=1), strict=True):
            found[(int(members[a]), int(members[b]))] = ("exact", 1.0)
    bands = [c for c in rows.columns if c.startswith("band_")]
    if bands and len(rows):
        keys = rows[bands].to_numpy(np.uint64)
        pairs = candidate_pairs(keys)
        pairs = pairs[split[pairs[:, 0]] != split[pairs[:, 1]]]  # only pairs across splits
        if len(pairs):
            involved = np.unique(pairs)
            matrix = indexed_signatures(lake, rows.loc[involved])
            position = {int(r): i for i, r in enumerate(involved)}
            a = matrix[[position[int(i)] for i in pairs[:, 0]]]
            b = matrix[[position[int(j)] for j in pairs[:, 1]]]
            similarity = estimated_jaccard(a, b)
            for (i, j), sim in zip(pairs, similarity, strict=True):
                if sim >= settings.related_threshold:
                    found.setdefault((int(i), int(j)), ("near", float(sim)))
    records = [{"id_a": rows.at[i, "id"], "split_a": split[i], "id_b": rows.at[j, "id"],
                "split_b": split[j], "splits": "|".join(sorted((split[i], split[j]))),
                "kind": kind, "similarity": round(sim, 4)}
               for (i, j), (kind, sim) in found.items() if split[i] != split[j]]
    frame = pd.DataFrame(records, columns=CROSS_COLUMNS)
    return frame.sort_values(["similarity", "id_a", "id_b"], ascending=[False, True, True],
                             ignore_index=True)
