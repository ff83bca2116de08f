"""Snapshot history: the snapshots the gate accepted, which later nights compare against."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from finegate.core.lake import Lake, read_json, write_json


def previous_snapshot(lake: Lake, digest: str) -> Path | None:
    """Folder of the latest earlier snapshot with a different digest, if any."""
    entries = read_json(lake.history) if lake.history.is_file() else []
    for entry in reversed(entries):
        if entry["snapshot"] != digest and Path(entry["scorecard"]).is_file():
            return Path(entry["scorecard"]).parent
    return None


def record_history(lake: Lake, digest: str, scorecard_path: Path) -> None:
    """Append a snapshot that passed the gate to the lake's history (unless it is the latest).

    Only blessed snapshots are history: the next night's drift and deltas are measured against
    the last snapshot the gate accepted, never against one it rejected.
    """
    entries = read_json(lake.history) if lake.history.is_file() else []
    if not entries or entries[-1]["snapshot"] != digest:
        entries.append({"snapshot": digest, "scorecard": str(scorecard_path),
                        "recorded": datetime.now(UTC).isoformat()})
        write_json(lake.history, entries)
