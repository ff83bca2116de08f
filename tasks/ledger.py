"""Ledger: which landing files were ingested, so each night reads only what is new.

``<lake>/ledger.json`` records, per drop, every file's path, size, mtime, ctime and SHA-256, the
drop's fingerprint (a digest of its files' hashes), its version and the rows read. A drop is
ingested when it is new or its fingerprint changed (a file added, removed or edited): the drop is
then re-ingested as a new version, replacing its bronze/silver/quarantine outputs, never
appended. Files up to 1 MiB are always re-hashed; a larger file is re-hashed unless its size,
mtime *and* inode change time are unchanged (an edit can restore the mtime, never the ctime).
The ledger is updated only after a drop is ingested *and* cleaned, so a crash in between
re-ingests it on the next run.

A drop whose folder is removed from the landing zone is **retracted**: the ledger keeps its
entry (marked ``retracted_at``, for audit) but it leaves the drop history the data stages
receive, so its rows leave the next snapshot. Delivering it again re-ingests it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finegate.core.lake import Lake, read_json, write_json
from finegate.core.landing import inside, list_drops

# Files up to this size are hashed on every scan: cheaper than trusting their metadata.
ALWAYS_HASH_BYTES = 1 << 20


@dataclass(frozen=True)
class DropPlan:
    """Tonight's drops: what to ingest, what is already in the lake, their scans, and the drops
    of the ledger that are gone from the landing zone (to retract)."""

    to_ingest: list[str]
    unchanged: list[str]
    scans: dict[str, dict[str, Any]] = field(default_factory=dict)
    retracted: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the logs."""
        new = ", ".join(self.to_ingest) or "none"
        gone = f"; removed from the landing zone: {', '.join(self.retracted)}" \
            if self.retracted else ""
        return (f"drops to ingest: {new}; already ingested and unchanged: "
                f"{len(self.unchanged)}{gone}")


def load_ledger(lake: Lake) -> dict[str, Any]:
    """The ledger, or an empty one."""
    path = lake.ledger
    return read_json(path) if path.is_file() else {"drops": {}}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def untouched(old: dict[str, Any] | None, stat: os.stat_result) -> bool:
    """Whether a file's known hash can be trusted without reading it: a file over 1 MiB whose
    size, mtime and inode change time are all unchanged (restoring an mtime changes the
    ctime, which no user can set)."""
    return bool(old) and stat.st_size > ALWAYS_HASH_BYTES and (
        old["size"], old["mtime_ns"], old.get("ctime_ns")) == (
        stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def scan_drop(landing: Path, drop: str, known: dict[str, Any]) -> dict[str, Any]:
    """Every file of a drop with size, mtime, ctime and hash (reusing the known hashes of
    untouched large files)."""
    files = {}
    for path in sorted(p for p in (landing / drop).rglob("*") if p.is_file()):
        relpath = path.relative_to(landing).as_posix()
        stat = path.stat()
        old = known.get(relpath)
        if not inside(path, landing):  # never read outside the landing zone (ingest quarantines)
            digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()
        else:
            digest = old["sha256"] if untouched(old, stat) else file_sha256(path)
        files[relpath] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                          "ctime_ns": stat.st_ctime_ns, "sha256": digest}
    fingerprint = hashlib.sha256("\n".join(
        f"{rel}\t{meta['sha256']}" for rel, meta in files.items()).encode()).hexdigest()
    return {"fingerprint": fingerprint, "files": files}


def plan_drops(landing: Path, lake: Lake) -> DropPlan:
    """Compare the landing zone with the ledger: new or changed drops (or retracted ones
    delivered again) are to be ingested; ledger drops gone from the landing zone, retracted."""
    ledger = load_ledger(lake)["drops"]
    to_ingest, unchanged, scans = [], [], {}
    landed = list_drops(landing)
    for drop in landed:
        known = ledger.get(drop, {})
        scans[drop] = scan_drop(landing, drop, known.get("files", {}))
        if known.get("fingerprint") == scans[drop]["fingerprint"] and \
                not known.get("retracted_at"):
            unchanged.append(drop)
        else:
            to_ingest.append(drop)
    gone = [d for d in sorted(ledger) if d not in landed and not ledger[d].get("retracted_at")]
    return DropPlan(to_ingest=to_ingest, unchanged=unchanged, scans=scans, retracted=gone)


def record_drop(lake: Lake, drop: str, scan: dict[str, Any], rows_read: int) -> dict[str, Any]:
    """Mark a drop as ingested and cleaned (a new version if it was known)."""
    ledger = load_ledger(lake)
    version = ledger["drops"].get(drop, {}).get("version", 0) + 1
    entry = {**scan, "version": version, "rows_read": rows_read,
             "ingested_at": datetime.now(UTC).isoformat()}
    ledger["drops"][drop] = entry
    write_json(lake.ledger, ledger)
    return entry


def retract_drops(lake: Lake, drops: list[str]) -> dict[str, int]:
    """Mark drops removed from the landing zone as retracted (kept in the ledger for audit);
    returns the rows each had read."""
    ledger = load_ledger(lake)
    now = datetime.now(UTC).isoformat()
    for drop in drops:
        ledger["drops"][drop]["retracted_at"] = now
    if drops:
        write_json(lake.ledger, ledger)
    return {drop: ledger["drops"][drop]["rows_read"] for drop in drops}


def ledger_drops(lake: Lake) -> dict[str, int]:
    """Every drop in the lake's history with its rows read, in name order (retracted drops
    left out)."""
    drops = load_ledger(lake)["drops"]
    return {drop: drops[drop]["rows_read"] for drop in sorted(drops)
            if not drops[drop].get("retracted_at")}


def retracted_rows(lake: Lake) -> int:
    """Rows read from drops that were retracted since: outside the accounting identity."""
    drops = load_ledger(lake)["drops"].values()
    return sum(entry["rows_read"] for entry in drops if entry.get("retracted_at"))
