"""Leakage: golden rows that the snapshot also holds, exactly or nearly, in any split.

A golden row that duplicates a training row inflates the score promotion is decided on. Every
night the golden set (``evaluation.golden_path``) is hashed like the nightly data (content hash
and MinHash, the dedup settings) and looked up in the dedup index on the Dask workers, the way
dedup looks up a new drop; exact copies and near duplicates (``dedup.threshold``) still in the
snapshot are leaks, named pair by pair in
``leakage.json`` beside the snapshot. The scorecard carries ``golden_train_leaks`` (golden rows
found in the train split) for the gate, and evaluation leaves leaked golden rows out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig, LabelSet
from finegate.core.dedup_index import Rows, minhash_config, scan_index
from finegate.core.inference import read_golden
from finegate.core.lake import Lake, write_json
from finegate.core.minhash import MinhashConfig, band_keys, signatures
from finegate.core.near_dedup import candidate_pairs, verified_pairs
from finegate.core.results import LeakageResult, SnapshotResult
from finegate.core.splits import SPLITS
from finegate.core.text import text_hash

SHOWN_CHARS = 200


def matching_pairs(texts: list[str], found: Rows, config: MinhashConfig, threshold: float,
                   ) -> list[tuple[int, int, str, float]]:
    """(golden row, found row, exact|near, similarity) for every match at ``threshold``."""
    hashes = [text_hash(t) for t in texts]
    golden = signatures(texts, config)
    pairs = {(g, f): ("exact", 1.0) for g, h in enumerate(hashes)
             for f in np.flatnonzero(found.keys["text_hash"].to_numpy() == h)}
    if len(found.keys):
        near = verified_pairs(golden, found.signatures, candidate_pairs(
            band_keys(golden, config), band_keys(found.signatures, config)), threshold)
        for g, f in near:
            similarity = float(np.mean(golden[g] == found.signatures[f]))
            pairs.setdefault((int(g), int(f)), ("near", similarity))
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
    if not golden_path:
        write_json(path, {"golden_rows": 0, "pairs": [], "leaked_golden": {}})
        return LeakageResult(leakage_path=str(path), golden_rows=0,
                             leaked_by_split={s: 0 for s in SPLITS}, leaked_golden=[])
    config = minhash_config(settings)
    texts, _ = read_golden(golden_path, label_set)
    found = scan_index(lake, snapshot.drops, [text_hash(t) for t in texts], [],
                       signatures(texts, config), config)
    in_snapshot = snapshot_rows(snapshot.data_path, found.keys["id"].astype(str).tolist())
    pairs = []
    for g, f, kind, similarity in matching_pairs(texts, found, config, settings.threshold):
        row = found.keys.iloc[f]
        split = in_snapshot.get((row["source"], int(row["position"])))
        if split is not None:  # a duplicate the snapshot dropped is no leak
            pairs.append(leak_record(g, texts[g], row, split, kind, similarity))
    return write_leakage(path, len(texts), pairs)


def leak_record(golden: int, text: str, row: Any, split: str, kind: str,
                similarity: float) -> dict[str, Any]:
    """One golden row and the snapshot row it leaks into."""
    return {"golden_row": golden, "golden_text": text[:SHOWN_CHARS], "id": row["id"],
            "drop": row["drop"], "source": row["source"], "position": int(row["position"]),
            "split": split, "kind": kind, "similarity": round(similarity, 4)}


def write_leakage(path: Path, golden_rows: int, pairs: list[dict[str, Any]]) -> LeakageResult:
    """Write the pairs and the counts per split; golden rows in train are the ones to leave
    out of the golden metric."""
    by_split = {s: len({p["golden_row"] for p in pairs if p["split"] == s}) for s in SPLITS}
    leaked = sorted({p["golden_row"] for p in pairs})
    write_json(path, {"golden_rows": golden_rows, "pairs": pairs, "leaked_by_split": by_split,
                      "leaked_golden": leaked})
    return LeakageResult(leakage_path=str(path), golden_rows=golden_rows,
                         leaked_by_split=by_split, leaked_golden=leaked)
