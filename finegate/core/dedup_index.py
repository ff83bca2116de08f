"""The dedup index in the lake: per drop, every row's keys, hashes, LSH band keys, signature
and cluster root (``dedup_index/rows/<drop>.parquet``), and scans of it on the Dask workers.

The dedup stage writes it; :func:`read_shingle_sets` reads back the texts of just the rows
a night must verify exactly (from the silver partitions, by source and position); any stage
that must find rows similar to a few texts (the night's new rows, the golden set) scans it
here: each worker reads the hashes, ids and band keys of some drops column by column and
returns only the matching rows with their signatures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig
from finegate.core.lake import Lake
from finegate.core.minhash import MinhashConfig, band_keys, shingle_sets

KEY_COLUMNS = ["id", "drop", "source", "position", "label", "text_hash"]
KEEP_ORDER = ["drop", "id", "source", "position"]
ROOT_COLUMNS = ["root_id", "root_drop", "root_source", "root_position", "root_label",
                "split_anchor"]  # root: the kept row of its cluster; anchor: whose split it takes
INDEX_VERSION = 4  # stored with the index: another version rebuilds it (4: exact Jaccard)
INDEX_SCHEMA = pa.schema([(c, pa.int64() if c.endswith("position") else pa.string())
                          for c in [*KEY_COLUMNS, *ROOT_COLUMNS]])


@dataclass(frozen=True)
class Rows:
    """Rows being deduplicated: their keys (a frame in keep order) and MinHash signatures."""

    keys: pd.DataFrame
    signatures: np.ndarray


BANDING_MARGIN = 0.1  # LSH banding tuned this far below the lowest threshold (recall)


def minhash_config(settings: DedupConfig) -> MinhashConfig:
    """The MinHash settings of the dedup section. The LSH banding is chosen for a similarity
    ``BANDING_MARGIN`` below the related threshold: a pair at the threshold is then a candidate
    with ~0.9 probability instead of ~0.5 (every candidate is verified on its signature, so
    this costs verification time, never precision)."""
    lowest = min(settings.threshold, settings.related_threshold)
    return MinhashConfig(shingle_size=settings.shingle_size, num_perm=settings.num_perm,
                         threshold=max(0.05, lowest - BANDING_MARGIN))


def match_indexed(index_file: str, hashes: pa.Array, ids: pa.Array, keys: pa.Array,
                  num_perm: int) -> Rows:
    """Rows of one indexed drop that share a content hash, an id or a band key with the new
    rows; only their signatures are read in full."""
    bands = [c for c in pq.read_schema(index_file).names if c.startswith("band_")]
    table = pq.read_table(index_file, columns=["text_hash", "id", *bands])
    hit = pc.or_(pc.is_in(table["text_hash"], value_set=hashes),
                 pc.is_in(table["id"], value_set=ids)).to_numpy()
    if bands and len(keys):  # band keys hash their band in: one lookup over all bands
        stored = np.concatenate([table[b].to_numpy() for b in bands])
        found = pc.is_in(pa.array(stored), value_set=keys).to_numpy(zero_copy_only=False)
        hit = hit | found.reshape(len(bands), -1).any(axis=0)
    rows = np.flatnonzero(hit)
    if not len(rows):
        return Rows(pd.DataFrame(columns=[*KEY_COLUMNS, *ROOT_COLUMNS]),
                    np.empty((0, num_perm), np.uint32))
    found = pq.read_table(index_file, columns=[*KEY_COLUMNS, *ROOT_COLUMNS, "signature"]).take(rows)
    matrix = found["signature"].combine_chunks().flatten().to_numpy().reshape(len(rows), -1)
    return Rows(found.drop_columns(["signature"]).to_pandas().astype(object), matrix)


def gather(parts: list[Rows], num_perm: int, columns: list[str] = KEY_COLUMNS) -> Rows:
    """One :class:`Rows` from several, sorted in keep order."""
    keys = pd.concat([p.keys for p in parts if len(p.keys)], ignore_index=True) \
        if any(len(p.keys) for p in parts) else pd.DataFrame(columns=columns)
    matrix = np.concatenate([p.signatures for p in parts]) if parts else \
        np.empty((0, num_perm), np.uint32)
    order = keys.sort_values(KEEP_ORDER, kind="stable").index.to_numpy()
    return Rows(keys.loc[order].reset_index(drop=True), matrix[order])


def index_file(lake: Lake, drop: str) -> str:
    """The index rows of one drop."""
    return str(lake.dedup_index / "rows" / f"{drop}.parquet")


def scan_index(lake: Lake, drops: list[str], hashes: list[str], ids: list[str],
               signatures: np.ndarray, config: MinhashConfig) -> Rows:
    """Indexed rows of ``drops`` sharing a content hash, an id or an LSH band key with the
    given values (scanned on the cluster; the scan is embarrassingly parallel per drop)."""
    import dask

    columns = [*KEY_COLUMNS, *ROOT_COLUMNS]
    if not drops or not (hashes or ids or len(signatures)):
        return gather([], config.num_perm, columns)
    keys = pa.array(np.unique(band_keys(signatures, config)) if len(signatures) else [],
                    type=pa.uint64())
    parts = dask.compute(*[dask.delayed(match_indexed)(
        index_file(lake, d), pa.array(hashes, pa.string()), pa.array(ids, pa.string()), keys,
        config.num_perm) for d in drops])
    return gather(list(parts), config.num_perm, columns)


Sets = tuple[np.ndarray, np.ndarray]  # CSR shingle sets: (sorted unique hashes, offsets)


def shingles_of_rows(silver_file: str, sources: list[str], positions: list[int],
                     size: int) -> tuple[list[tuple[str, int]], Sets]:
    """Shingle sets of the rows of one silver partition with the given (source, position):
    the keys are read for every row group, the text only of row groups holding a wanted row,
    and only the wanted rows' texts are kept."""
    wanted = pa.table({"source": pa.array(sources, pa.string()),
                       "position": pa.array(positions, pa.int64())})
    file = pq.ParquetFile(silver_file)
    found_keys: list[tuple[str, int]] = []
    texts: list[str] = []
    for group in range(file.num_row_groups):
        keys = file.read_row_group(group, columns=["source", "position"])
        joined = keys.append_column("row", pa.array(np.arange(len(keys)))).join(
            wanted, ["source", "position"], join_type="inner")
        if not len(joined):
            continue
        rows = np.sort(joined["row"].to_numpy())
        chosen = keys.take(rows)
        found_keys += list(zip(chosen["source"].to_pylist(), chosen["position"].to_pylist(),
                               strict=True))
        texts += file.read_row_group(group, columns=["text"])["text"].take(rows).to_pylist()
    return found_keys, shingle_sets([t or "" for t in texts], size)


def read_shingle_sets(lake: Lake, rows: pd.DataFrame, size: int) -> tuple[Sets, np.ndarray]:
    """Shingle sets of ``rows`` (columns drop, source, position), in their order, read from
    their drops' silver partitions on the cluster: only those rows' texts are kept, so memory
    grows with the rows asked for, never with the history. Also returns whether each row was
    found (a row no longer in the silver layer gets an empty set and False)."""
    import dask

    if not len(rows):
        return (np.empty(0, np.uint64), np.zeros(1, np.int64)), np.zeros(0, bool)
    tasks = []
    for drop, group in rows.groupby("drop", sort=True):
        sources = group["source"].astype(str).tolist()
        positions = group["position"].astype("int64").tolist()
        tasks += [dask.delayed(shingles_of_rows)(f, sources, positions, size)
                  for f in lake.silver_files([str(drop)])]
    where: dict[tuple[str, int], tuple[int, int]] = {}
    flats, start = [], 0
    for found_keys, (flat, offsets) in dask.compute(*tasks):
        for k, key in enumerate(found_keys):
            where.setdefault(key, (start + int(offsets[k]), start + int(offsets[k + 1])))
        flats.append(flat)
        start += len(flat)
    every = np.concatenate(flats) if flats else np.empty(0, np.uint64)
    keys = list(zip(rows["source"].astype(str), rows["position"].astype(int), strict=True))
    found = np.array([key in where for key in keys], dtype=bool)
    spans = [where.get(key, (0, 0)) for key in keys]
    sizes = np.array([hi - lo for lo, hi in spans], dtype=np.int64)
    starts = np.array([lo for lo, _ in spans], dtype=np.int64)
    within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    flat = every[np.repeat(starts, sizes) + within]
    return (flat, np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)), found
