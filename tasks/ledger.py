"""Ledger: which landing files were ingested, so each night reads only what is new.

``<lake>/ledger.json`` records, per drop, every file's path, size, mtime and SHA-256, the drop's
fingerprint (a digest of its files' hashes), its version and the rows read. A drop is ingested
when it is new or its fingerprint changed (a file added, removed or edited): the drop is then
re-ingested as a new version, replacing its bronze/silver/quarantine outputs, never appended.
Files whose size and mtime are unchanged are not re-hashed. The ledger is updated only after a
drop is ingested *and* cleaned, so a crash in between re-ingests it on the next run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finegate.core.lake import Lake, read_json, write_json
from finegate.core.landing import inside, list_drops


@dataclass(frozen=True)
class DropPlan:
    """Tonight's drops: what to ingest, what is already in the lake, and their scans."""

    to_ingest: list[str]
    unchanged: list[str]
    scans: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the logs."""
        new = ", ".join(self.to_ingest) or "none"
        return f"drops to ingest: {new}; already ingested and unchanged: {len(self.unchanged)}"


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


def scan_drop(landing: Path, drop: str, known: dict[str, Any]) -> dict[str, Any]:
    """Every file of a drop with size, mtime and hash (reusing known hashes of untouched files)."""
    files = {}
    for path in sorted(p for p in (landing / drop).rglob("*") if p.is_file()):
        relpath = path.relative_to(landing).as_posix()
        stat = path.stat()
        old = known.get(relpath)
        unchanged = old and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns
        if not inside(path, landing):  # never read outside the landing zone (ingest quarantines)
            digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()
        else:
            digest = old["sha256"] if unchanged else file_sha256(path)
        files[relpath] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    fingerprint = hashlib.sha256("\n".join(
        f"{rel}\t{meta['sha256']}" for rel, meta in files.items()).encode()).hexdigest()
    return {"fingerprint": fingerprint, "files": files}


def plan_drops(landing: Path, lake: Lake) -> DropPlan:
    """Compare the landing zone with the ledger: new or changed drops are to be ingested."""
    ledger = load_ledger(lake)["drops"]
    to_ingest, unchanged, scans = [], [], {}
    for drop in list_drops(landing):
        known = ledger.get(drop, {})
        scans[drop] = scan_drop(landing, drop, known.get("files", {}))
        if known.get("fingerprint") == scans[drop]["fingerprint"]:
            unchanged.append(drop)
        else:
            to_ingest.append(drop)
    return DropPlan(to_ingest=to_ingest, unchanged=unchanged, scans=scans)


def record_drop(lake: Lake, drop: str, scan: dict[str, Any], rows_read: int) -> dict[str, Any]:
    """Mark a drop as ingested and cleaned (a new version if it was known)."""
    ledger = load_ledger(lake)
    version = ledger["drops"].get(drop, {}).get("version", 0) + 1
    entry = {**scan, "version": version, "rows_read": rows_read,
             "ingested_at": datetime.now(UTC).isoformat()}
    ledger["drops"][drop] = entry
    write_json(lake.ledger, ledger)
    return entry


def ledger_drops(lake: Lake) -> dict[str, int]:
    """Every drop in the lake's history with its rows read, in name order."""
    drops = load_ledger(lake)["drops"]
    return {drop: drops[drop]["rows_read"] for drop in sorted(drops)}
