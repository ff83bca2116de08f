"""Where every stage reads and writes inside the lake folder (see DESIGN.md)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
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
