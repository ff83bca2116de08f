"""The one quarantine writer: a stage says which rows it rejects and why, never how.

As in DataTrove's ``BaseFilter`` (a filter returns ``False, "reason"`` and the base writes the
document aside), a stage calls :func:`reject` and :func:`write_quarantine`; every quarantined
row keeps where it came from, the stage, its reason and its raw content.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from finegate.core.lake import Lake
from finegate.core.schemas import QUARANTINE_COLUMNS, QUARANTINE_SCHEMA, write_parquet


def reject(rows: pd.DataFrame, stage: str, reason: str | Sequence[str],
           raw: Sequence[str] | None = None) -> pd.DataFrame:
    """``rows`` in the quarantine's shape, each with the stage and its reason.

    ``raw`` defaults to the rows' ``raw`` column, else their text.
    """
    if raw is None:
        raw = rows["raw"] if "raw" in rows else rows["text"]
    out = rows.assign(stage=stage, reason=reason if isinstance(reason, str) else list(reason),
                      raw=list(raw))
    return out.reindex(columns=QUARANTINE_COLUMNS)


def write_quarantine(rejected: pd.DataFrame, folder: Path, name: str) -> int:
    """Write rejected rows (from :func:`reject`) as one Parquet file; returns the count."""
    return write_parquet(rejected, folder, QUARANTINE_SCHEMA, name)


def quarantine_files(lake: Lake, drops: list[str]) -> list[Path]:
    """Every quarantine Parquet file of the given drops, over all stages."""
    return [f for drop in drops for f in sorted((lake.quarantine_root / drop).glob("*/*"))
            if f.suffix == ".parquet"]


def quarantine_reasons(lake: Lake, drops: list[str]) -> pd.Series:
    """Every quarantined row's reason, over all stages of the given drops."""
    files = quarantine_files(lake, drops)
    if not files:
        return pd.Series(dtype=object)
    return pd.concat(pq.read_table(f, columns=["reason"]).to_pandas()["reason"] for f in files)
