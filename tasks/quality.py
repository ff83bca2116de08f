"""Quality: the snapshot's scorecard and the accounting identity that proves nothing was lost.

``scorecard.json`` (in the snapshot folder) holds rows, duplicate/empty/missing ratios, class
balance ``1 - Σ_c (n_c/N - 1/C)^2`` over the configured labels, label counts, length statistics
and the accounting of every row read: curated + quarantined + duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from prefect import task

from finegate.config import Config
from finegate.lake import Lake, write_json
from tasks.snapshot import SnapshotResult

EMPTY_REASONS = ("missing text", "empty text after cleaning")


class AccountingError(RuntimeError):
    """Rows read do not equal rows curated + quarantined + dropped as duplicates."""


@dataclass(frozen=True)
class QualityResult:
    """Where the scorecard is, and its headline numbers."""

    scorecard_path: str
    scorecard: dict[str, Any]


def parquet_rows(path: str | Path) -> int:
    """Rows in a Parquet file or folder of files, from their footers (no data is read)."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.read_metadata(f).num_rows for f in files)


def quarantine_reasons(lake: Lake, drops: list[str]) -> pd.Series:
    """Every quarantined row's reason, over all stages of the given drops."""
    files = [f for drop in drops for f in sorted((lake.root / "quarantine" / drop).glob("*/*"))
             if f.suffix == ".parquet"]
    if not files:
        return pd.Series(dtype=object)
    return pd.concat(pq.read_table(f, columns=["reason"]).to_pandas()["reason"] for f in files)


def account_rows(rows_read: int, snapshot: SnapshotResult, lake: Lake) -> dict[str, Any]:
    """Count curated, quarantined and duplicate rows on disk and compare with rows read."""
    curated = parquet_rows(snapshot.data_path)
    quarantined = len(quarantine_reasons(lake, snapshot.drops))
    duplicates = parquet_rows(snapshot.duplicates_path)
    return {"rows_read": rows_read, "curated": curated, "quarantined": quarantined,
            "duplicates": duplicates, "holds": rows_read == curated + quarantined + duplicates}


def check_accounting(accounting: dict[str, Any]) -> None:
    """Raise :class:`AccountingError` with the numbers when the identity does not hold."""
    if not accounting["holds"]:
        a = accounting
        raise AccountingError(
            f"rows read ({a['rows_read']}) != curated ({a['curated']}) + quarantined "
            f"({a['quarantined']}) + duplicates ({a['duplicates']}): rows were lost or "
            "counted twice; inspect the lake's quarantine/ and the snapshot's duplicates/"
        )


def class_balance(label_counts: dict[str, int], labels: list[str]) -> float:
    """``1 - Σ_c (n_c/N - 1/C)^2`` over the configured labels: 1 is perfectly balanced."""
    total = sum(label_counts.values())
    if total == 0:
        return 0.0
    share = 1 / len(labels)
    return 1 - sum((label_counts.get(c, 0) / total - share) ** 2 for c in labels)


def length_stats(lengths: pd.Series) -> dict[str, float]:
    """Min, percentiles, mean and max of a length column."""
    if lengths.empty:
        return {k: 0.0 for k in ("min", "p05", "median", "p95", "max", "mean")}
    q = lengths.quantile([0.05, 0.5, 0.95])
    return {"min": float(lengths.min()), "p05": float(q[0.05]), "median": float(q[0.5]),
            "p95": float(q[0.95]), "max": float(lengths.max()), "mean": float(lengths.mean())}


def build_scorecard(rows_read: int, snapshot: SnapshotResult, lake: Lake,
                    labels: list[str]) -> dict[str, Any]:
    """All quality metrics of a snapshot, plus the accounting of every row read."""
    data = pq.read_table(snapshot.data_path, columns=["text", "label"]).to_pandas()
    counts = {c: int((data["label"] == c).sum()) for c in labels}
    accounting = account_rows(rows_read, snapshot, lake)
    reasons = quarantine_reasons(lake, snapshot.drops)
    read = max(rows_read, 1)
    return {
        "snapshot": snapshot.digest,
        "rows": len(data),
        "label_counts": counts,
        "labels_present": sum(1 for n in counts.values() if n > 0),
        "class_balance": class_balance(counts, labels),
        "duplicate_ratio": accounting["duplicates"] / max(len(data) + accounting["duplicates"], 1),
        "empty_ratio": float(reasons.isin(EMPTY_REASONS).sum()) / read,
        "quarantine_ratio": accounting["quarantined"] / read,
        "length_chars": length_stats(data["text"].str.len()),
        "length_words": length_stats(data["text"].str.split().str.len()),
        "accounting": accounting,
    }


@task(name="quality-scorecard")
def quality(config: Config, rows_read: int, snapshot: SnapshotResult) -> QualityResult:
    """Prefect task: write the scorecard; fail if the accounting identity does not hold."""
    scorecard = build_scorecard(rows_read, snapshot, Lake.at(config.lake_path), config.labels)
    path = write_json(Path(snapshot.path) / "scorecard.json", scorecard)
    check_accounting(scorecard["accounting"])
    return QualityResult(scorecard_path=str(path), scorecard=scorecard)


@task(name="accounting")
def accounting(config: Config, rows_read: int, snapshot: SnapshotResult) -> dict[str, Any]:
    """Prefect task: recount every row from disk at the end of the run; fail if any is lost."""
    result = account_rows(rows_read, snapshot, Lake.at(config.lake_path))
    check_accounting(result)
    return result
