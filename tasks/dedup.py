"""Dedup: exact, then near-duplicates; keep one row per cluster and log every row dropped.

Runs over the cleaned rows of all drops, in keep order (drop, id, source, position):
1. rows with the same ``text_hash`` (normalised text) keep the first; the rest are logged;
2. an ``id`` left with different texts keeps its newest version (the later drop name wins);
3. near-duplicates (MinHash LSH, estimated Jaccard ≥ threshold) keep the first of each cluster.
Clusters whose members carry different labels are **conflicts**, a label-noise signal: they are
written to ``dedup/conflicts/`` and the kept row is flagged ``conflicting_duplicate``.
MinHash signatures are computed per partition on the Dask cluster; only keys and signatures
come back to the driver, the text stays in Parquet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig
from finegate.core.lake import Lake
from finegate.core.near_dedup import minhash_signatures, near_duplicates
from finegate.core.results import DedupResult
from finegate.core.schemas import (
    CONFLICT_COLUMNS,
    CONFLICTS_SCHEMA,
    DUPLICATE_COLUMNS,
    DUPLICATES_SCHEMA,
    write_parquet,
)

KEY_COLUMNS = ["id", "drop", "source", "position", "label", "text_hash"]
KEEP_ORDER = ["drop", "id", "source", "position"]


def exact_duplicates(keys: pd.DataFrame) -> pd.DataFrame:
    """Rows to drop from ``keys`` by content hash or reused id, with ``duplicate_of``/``reason``."""
    if keys.empty:
        return pd.DataFrame(columns=DUPLICATE_COLUMNS)
    ordered = keys.sort_values(KEEP_ORDER, kind="stable")
    repeated = ordered.duplicated("text_hash", keep="first")
    first_id = ordered.drop_duplicates("text_hash").set_index("text_hash")["id"]
    by_content = ordered.loc[repeated].assign(
        duplicate_of=lambda d: d["text_hash"].map(first_id),
        cluster=lambda d: "exact-" + d["text_hash"].str[:16],
        reason="exact duplicate (same normalised text)",
    )
    distinct = ordered.loc[~repeated]
    superseded = distinct.duplicated("id", keep="last")
    newest_drop = distinct.drop_duplicates("id", keep="last").set_index("id")["drop"]
    by_id = distinct.loc[superseded].assign(
        duplicate_of=lambda d: d["id"],
        cluster=lambda d: "id-" + d["id"],
        reason=lambda d: [f"id reused with other text; the version in drop {newest_drop[i]} "
                          "is kept" for i in d["id"]],
    )
    return pd.concat([by_content, by_id])[DUPLICATE_COLUMNS].reset_index(drop=True)


def conflicting_clusters(keys: pd.DataFrame, duplicates: pd.DataFrame) -> pd.DataFrame:
    """Kept rows whose content cluster (exact or near) holds more than one label."""
    content = duplicates.loc[[not str(c).startswith("id-") for c in duplicates["cluster"]]]
    if content.empty:
        return pd.DataFrame(columns=CONFLICT_COLUMNS)
    labels = content.groupby("duplicate_of")["label"].agg(set)
    # the surviving row of each cluster (ids are unique among survivors; a dropped row may
    # share its id, e.g. the same record delivered twice)
    dropped = set(zip(duplicates["source"], duplicates["position"], strict=True))
    survivors = keys.loc[[key not in dropped for key in
                          zip(keys["source"], keys["position"], strict=True)]]
    kept = survivors.loc[survivors["id"].isin(labels.index)]
    kept = kept.assign(labels=[sorted(labels[i] | {lab}) for i, lab in
                               zip(kept["id"], kept["label"], strict=True)])
    kept = kept.loc[kept["labels"].str.len() > 1]
    cluster = content.drop_duplicates("duplicate_of").set_index("duplicate_of")["cluster"]
    return kept.assign(cluster=kept["id"].map(cluster))[CONFLICT_COLUMNS]


def _keys_and_signatures(silver_file: str, settings: DedupConfig,
                         ) -> tuple[pd.DataFrame, np.ndarray | None]:
    frame = pq.read_table(silver_file, columns=[*KEY_COLUMNS, "text"]).to_pandas()
    signatures = (minhash_signatures(frame["text"].tolist(), settings.shingle_size,
                                     settings.num_perm) if settings.near else None)
    return frame[KEY_COLUMNS].astype(object), signatures


def find_duplicates(lake: Lake, drops: list[str], settings: DedupConfig,
                    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Keys of all rows, the duplicates to drop, and the conflicting clusters."""
    import dask

    parts = dask.compute(*[dask.delayed(_keys_and_signatures)(f, settings)
                           for f in lake.silver_files(drops)])
    if not parts:
        empty = pd.DataFrame(columns=KEY_COLUMNS)
        return empty, pd.DataFrame(columns=DUPLICATE_COLUMNS), pd.DataFrame(
            columns=CONFLICT_COLUMNS)
    keys = pd.concat([k for k, _ in parts], ignore_index=True)
    exact = exact_duplicates(keys)
    found = [exact]
    if settings.near:
        signatures = np.concatenate([s for _, s in parts])
        dropped = set(zip(exact["source"], exact["position"], strict=True))
        remaining = [key not in dropped for key in
                     zip(keys["source"], keys["position"], strict=True)]
        order = keys.loc[remaining].sort_values(KEEP_ORDER, kind="stable").index.to_numpy()
        near = near_duplicates(keys.loc[order].reset_index(drop=True), signatures[order],
                               settings.threshold)
        found.append(near.assign(
            reason=f"near duplicate (estimated Jaccard >= {settings.threshold})"))
    duplicates = pd.concat(found)[DUPLICATE_COLUMNS].reset_index(drop=True)
    return keys, duplicates, conflicting_clusters(keys, duplicates)


def dedup_drops(lake: Lake, drops: list[str], settings: DedupConfig) -> DedupResult:
    """Find exact and near duplicates across the drops; write the dedup log and conflicts."""
    keys, duplicates, conflicts = find_duplicates(lake, drops, settings)
    with lake.staged(lake.dedup) as (staged,):
        write_parquet(duplicates, staged / "duplicates", DUPLICATES_SCHEMA, "log")
        write_parquet(conflicts, staged / "conflicts", CONFLICTS_SCHEMA, "log")
    near = sum(str(c).startswith("near-") for c in duplicates["cluster"])
    return DedupResult(duplicates_path=str(lake.dedup / "duplicates"),
                       conflicts_path=str(lake.dedup / "conflicts"), rows_in=len(keys),
                       exact_duplicates=len(duplicates) - near, near_duplicates=near,
                       conflicts=len(conflicts), rows_hashed=len(keys))
