"""Where every stage reads and writes inside the lake folder (see DESIGN.md)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Lake:
    """Paths of one lake: bronze, silver, quarantine, curated snapshots, runs."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> Lake:
        """The lake rooted at ``root`` (created if missing)."""
        path = Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def id(self) -> str:
        """A random id minted when the lake is first used: a new lake never reuses old caches."""
        path = self.root / "lake.json"
        if not path.is_file():
            write_json(path, {"id": uuid.uuid4().hex})
        return read_json(path)["id"]

    def bronze(self, drop: str) -> Path:
        """Typed rows of one landing drop."""
        return self.root / "bronze" / drop

    def silver(self, drop: str) -> Path:
        """Cleaned rows of one drop."""
        return self.root / "silver" / drop

    def silver_files(self, drops: list[str]) -> list[str]:
        """Every silver Parquet file of the given drops, in drop then name order."""
        return [str(f) for drop in drops for f in sorted(self.silver(drop).glob("*.parquet"))]

    def quarantine(self, drop: str, stage: str) -> Path:
        """Rows of one drop that a stage rejected, each with its reason and raw content."""
        return self.root / "quarantine" / drop / stage

    @property
    def snapshots(self) -> Path:
        """Curated snapshots, one folder per content digest."""
        return self.root / "curated" / "snapshots"

    @property
    def latest_snapshot(self) -> Path:
        """Which snapshot was built last (JSON): the next one links its unchanged partitions."""
        return self.root / "curated" / "latest.json"

    def snapshot(self, digest: str) -> Path:
        """The folder of one curated snapshot."""
        return self.snapshots / digest

    @property
    def quarantine_root(self) -> Path:
        """All quarantined rows: ``quarantine/<drop>/<stage>/``."""
        return self.root / "quarantine"

    @property
    def dedup(self) -> Path:
        """The dedup log (``duplicates/``) and conflicting clusters (``conflicts/``)."""
        return self.root / "dedup"

    @property
    def dedup_index(self) -> Path:
        """Persistent dedup state: per-drop hashes and signatures, LSH band buckets."""
        return self.root / "dedup_index"

    @property
    def labels(self) -> Path:
        """The label review's decisions of the last run."""
        return self.root / "labels"

    @property
    def history(self) -> Path:
        """The snapshots the gate accepted, oldest first (JSON)."""
        return self.root / "curated" / "history.json"

    @property
    def ledger(self) -> Path:
        """Drops ingested, with their file scans and rows read (JSON)."""
        return self.root / "ledger.json"

    @property
    def gx(self) -> Path:
        """The Great Expectations file context (results behind the Data Docs)."""
        return self.root / "gx"

    def model(self, snapshot_digest: str, training_digest: str) -> Path:
        """The model trained on a snapshot with one set of training settings."""
        return self.root / "models" / f"{snapshot_digest[:16]}-{training_digest}"

    def run(self, run_name: str) -> Path:
        """Per-run outputs: model, evaluation, gate result, Data Docs."""
        return self.root / "runs" / run_name

    def staging(self) -> Path:
        """A fresh folder for output that is renamed into place once complete."""
        path = self.root / "_staging" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    @contextmanager
    def staged(self, *targets: Path) -> Iterator[tuple[Path, ...]]:
        """Write-then-rename: one fresh folder per target; on success each replaces its
        target whole, so readers never see a half-written stage output. On error the staging
        folder is removed and the targets are untouched."""
        staging = self.staging()
        folders = tuple(staging / str(n) for n in range(len(targets)))
        for folder in folders:
            folder.mkdir()
        try:
            yield folders
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for folder, target in zip(folders, targets, strict=True):
            replace_dir(folder, target)
        shutil.rmtree(staging, ignore_errors=True)

    def remove_stale_staging(self, older_than_s: float) -> int:
        """Remove staging folders last written more than ``older_than_s`` ago (left by a killed
        run); returns how many. Call it only while holding :func:`lake_lock`: the age spares
        folders of writers that do not take the lock (a test, a benchmark) still at work."""
        removed = 0
        cutoff = time.time() - older_than_s
        for folder in sorted((self.root / "_staging").glob("*")):
            if folder.is_dir() and newest_mtime(folder) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


def newest_mtime(folder: Path) -> float:
    """The latest modification time of a folder or anything inside it (now, when it changes
    while being looked at: someone is writing it)."""
    try:
        return max([folder.stat().st_mtime,
                    *(p.stat().st_mtime for p in folder.rglob("*") if not p.is_symlink())])
    except OSError:
        return time.time()


class LakeBusy(RuntimeError):
    """Another run holds the lake's lock."""


@contextmanager
def lake_lock(lake: Lake) -> Iterator[None]:
    """Hold the lake's exclusive lock for a run; refuse at once if another run holds it."""
    path = lake.root / ".lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LakeBusy(f"another Finegate run holds the lock of the lake {lake.root} "
                           f"({holder}); two runs must not write one lake at once - wait for "
                           "it to finish (deployments queue runs with a concurrency limit of 1)"
                           ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {datetime.now(UTC).isoformat()}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def replace_dir(staged: Path, target: Path) -> None:
    """Move a completed ``staged`` folder to ``target``, replacing what was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old)
    else:
        os.replace(staged, target)


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text())
