"""The lake's tables: one pyarrow schema per kind of row, column lists derived from them.

``write_parquet`` is the one way a stage writes a partition, so every file of a kind has the
same schema, including empty ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_TEXT, _LIST = pa.string(), pa.list_(pa.string())

# (source, position) names the row of a landing file a record came from: unique per row read.
BRONZE_SCHEMA = pa.schema([
    ("id", _TEXT), ("text", _TEXT), ("label", _TEXT), ("annotator_labels", _LIST),
    ("annotator_ids", _LIST), ("source", _TEXT), ("position", pa.int64()), ("drop", _TEXT),
    ("flags", _LIST),
])
SILVER_SCHEMA = BRONZE_SCHEMA.append(pa.field("text_hash", _TEXT))
# fold: the row's k-fold fold under split.strategy kfold, else null
CURATED_SCHEMA = SILVER_SCHEMA.append(pa.field("split", _TEXT)).append(pa.field("fold", pa.int64()))
QUARANTINE_SCHEMA = pa.schema([
    ("id", _TEXT), ("drop", _TEXT), ("source", _TEXT), ("position", pa.int64()),
    ("stage", _TEXT), ("reason", _TEXT), ("raw", _TEXT),
])
DUPLICATES_SCHEMA = pa.schema([
    ("id", _TEXT), ("drop", _TEXT), ("source", _TEXT), ("position", pa.int64()),
    ("label", _TEXT), ("text_hash", _TEXT), ("duplicate_of", _TEXT), ("cluster", _TEXT),
    ("reason", _TEXT),
])
CONFLICTS_SCHEMA = pa.schema([
    ("source", _TEXT), ("position", pa.int64()), ("id", _TEXT), ("drop", _TEXT),
    ("cluster", _TEXT), ("labels", _LIST),
])
DECISIONS_SCHEMA = pa.schema([
    ("source", _TEXT), ("position", pa.int64()), ("id", _TEXT), ("drop", _TEXT),
    ("label", _TEXT), ("suggested_label", _TEXT), ("label_quality", pa.float64()),
    ("is_label_issue", pa.bool_()), ("action", _TEXT), ("agreement", pa.float64()),
    # a person's review overrides ``action`` (see tasks/labels.py, human reviews): the
    # consensus label of the review votes and its lineage; null on rows nobody reviewed
    ("human_label", _TEXT), ("consensus_quality", pa.float64()), ("reviewed_by", _LIST),
    ("review_queue", _TEXT), ("annotated_at", _TEXT), ("review_of", _TEXT),
])

BRONZE_COLUMNS = BRONZE_SCHEMA.names
SILVER_COLUMNS = SILVER_SCHEMA.names
CURATED_COLUMNS = CURATED_SCHEMA.names
QUARANTINE_COLUMNS = QUARANTINE_SCHEMA.names
DUPLICATE_COLUMNS = DUPLICATES_SCHEMA.names
CONFLICT_COLUMNS = CONFLICTS_SCHEMA.names
DECISION_COLUMNS = DECISIONS_SCHEMA.names


def write_parquet(frame: pd.DataFrame, folder: Path, schema: pa.Schema, name: str) -> int:
    """Write ``frame``'s schema columns as ``folder/<name>.parquet``, atomically (a temporary
    file renamed into place: a killed run never leaves half a file); returns its row count."""
    folder.mkdir(parents=True, exist_ok=True)
    table = (pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
             if len(frame) else schema.empty_table())
    write_table(table, folder / f"{name}.parquet")
    return len(frame)


def write_table(table: pa.Table, path: Path) -> None:
    """Write one Parquet file atomically: a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial)
    os.replace(partial, path)


def parquet_rows(path: str | Path) -> int:
    """Rows in a Parquet file or folder of files, from their footers (no data is read)."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.read_metadata(f).num_rows for f in files)


def row_keys(path: str | Path) -> set[tuple[str, int]]:
    """The (source, position) pairs of the rows in a Parquet file or folder."""
    log = pq.read_table(path, columns=["source", "position"]).to_pandas()
    return set(zip(log["source"], log["position"], strict=True))
