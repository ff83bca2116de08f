"""Where every stage reads and writes inside the lake folder (see DESIGN.md)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# (source, position) names the row of a landing file a record came from: unique per row read.
BRONZE_COLUMNS = [
    "id", "text", "label", "annotator_labels", "annotator_ids", "source", "position", "drop",
    "flags",
]
QUARANTINE_COLUMNS = ["id", "drop", "source", "position", "stage", "reason", "raw"]


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

    def quarantine(self, drop: str, stage: str) -> Path:
        """Rows of one drop that a stage rejected, each with its reason and raw content."""
        return self.root / "quarantine" / drop / stage

    @property
    def snapshots(self) -> Path:
        """Curated snapshots, one folder per content digest."""
        return self.root / "curated" / "snapshots"

    def snapshot(self, digest: str) -> Path:
        """The folder of one curated snapshot."""
        return self.snapshots / digest

    def run(self, run_name: str) -> Path:
        """Per-run outputs: model, evaluation, gate result, Data Docs."""
        return self.root / "runs" / run_name

    def staging(self) -> Path:
        """A fresh folder for output that is renamed into place once complete."""
        path = self.root / "_staging" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path


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
