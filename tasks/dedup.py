"""Exact dedup: keep one row per normalised-content hash and log every row it drops.

Runs over the cleaned rows of all drops. Two rules, in order:
1. rows with the same ``text_hash`` keep the first by (drop, id, source, position); the rest
   are duplicates of it;
2. an ``id`` left with different texts keeps its newest version (the later drop name wins).
Only the small key columns are collected; the text stays in Parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
from prefect import task

from finegate.config import Config
from finegate.lake import Lake, replace_dir
from tasks.ingest import write_partition

KEY_COLUMNS = ["id", "drop", "source", "position", "label", "text_hash"]
DUPLICATE_COLUMNS = [*KEY_COLUMNS, "duplicate_of", "reason"]
DUPLICATES_SCHEMA = pa.schema([(c, pa.int64() if c == "position" else pa.string())
                               for c in DUPLICATE_COLUMNS])


@dataclass(frozen=True)
class DedupResult:
    """Where the dedup log is, and how many rows it holds."""

    duplicates_path: str
    rows_in: int
    duplicates: int


def exact_duplicates(keys: pd.DataFrame) -> pd.DataFrame:
    """Rows to drop from ``keys`` (``KEY_COLUMNS``), each with ``duplicate_of`` and ``reason``."""
    ordered = keys.sort_values(["drop", "id", "source", "position"], kind="stable")
    repeated = ordered.duplicated("text_hash", keep="first")
    first_id = ordered.drop_duplicates("text_hash").set_index("text_hash")["id"]
    by_content = ordered.loc[repeated].assign(
        duplicate_of=lambda d: d["text_hash"].map(first_id),
        reason="exact duplicate (same normalised text)",
    )
    distinct = ordered.loc[~repeated]
    superseded = distinct.duplicated("id", keep="last")
    newest_drop = distinct.drop_duplicates("id", keep="last").set_index("id")["drop"]
    by_id = distinct.loc[superseded].assign(
        duplicate_of=lambda d: d["id"],
        reason=lambda d: [f"id reused with other text; the version in drop {newest_drop[i]} "
                          "is kept" for i in d["id"]],
    )
    return pd.concat([by_content, by_id])[DUPLICATE_COLUMNS].reset_index(drop=True)


def silver_files(lake: Lake, drops: list[str]) -> list[str]:
    """Every silver Parquet file of the given drops."""
    return [str(f) for drop in drops for f in sorted(lake.silver(drop).glob("*.parquet"))]


def read_keys(files: list[str]) -> pd.DataFrame:
    """The key columns of the given silver files, read in parallel by Dask."""
    import dask.dataframe as dd

    if not files:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in KEY_COLUMNS})
    return dd.read_parquet(files, columns=KEY_COLUMNS).compute().astype(object)


def dedup_drops(lake: Lake, drops: list[str]) -> DedupResult:
    """Find exact duplicates across the drops' silver rows; write the dedup log."""
    keys = read_keys(silver_files(lake, drops))
    duplicates = exact_duplicates(keys)
    staged = lake.staging()
    write_partition(duplicates, staged / "duplicates", DUPLICATES_SCHEMA, "exact")
    target = lake.root / "dedup"
    replace_dir(staged / "duplicates", target)
    staged.rmdir()
    return DedupResult(duplicates_path=str(target), rows_in=len(keys),
                       duplicates=len(duplicates))


def duplicate_keys(duplicates_path: str | Path) -> set[tuple[str, int]]:
    """The rows a dedup log removes, as (source, position) pairs."""
    import pyarrow.parquet as pq

    log = pq.read_table(duplicates_path, columns=["source", "position"]).to_pandas()
    return set(zip(log["source"], log["position"], strict=True))


@task(name="exact-dedup")
def dedup(config: Config, drops: list[str]) -> DedupResult:
    """Prefect task: exact dedup over the cleaned drops."""
    from prefect_dask import get_dask_client

    with get_dask_client():
        return dedup_drops(Lake.at(config.lake_path), drops)
