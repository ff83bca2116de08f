"""The last nights at a glance, for ``finegate status``: read from the lake's run folders and
the model registry, never written.

A night is a run folder ``<lake>/runs/<run>`` (a run that reached the quality gate). Its
``run.json`` (written with the night's report, also when the gate stopped it) names the
scorecard, gate result and model version; the registry adds each version's promotion decision
and which version is champion now. When the registry does not answer, the lake part is still
shown, and the error says why.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finegate.core.checks import unreachable
from finegate.core.config import RegistrySettings
from finegate.core.lake import Lake, read_json

MODEL_URI = re.compile(r"models:/(?P<name>[^/\s]+)/(?P<version>\d+)\s*$")


@dataclass(frozen=True)
class Night:
    """One night as the lake and the registry record it (None: not known)."""

    run: str
    started: str | None  # ISO time from the run's name (its scheduled start, UTC)
    finished: bool  # the run wrote run.json: it reached its report (passed the gate or not)
    drops: list[str] | None  # drops ingested that night; None for runs before it was recorded
    rows_read: int | None = None
    curated: int | None = None
    quarantined: int | None = None
    duplicates: int | None = None
    gate: str = "not recorded"  # passed | failed | not recorded
    gate_reason: str = ""
    warnings: list[str] = field(default_factory=list)
    snapshot: str | None = None
    model_version: str | None = None
    trained: bool | None = None  # trained that night (False: the snapshot's model existed)
    test_macro_f1: float | None = None
    promotion: str | None = None  # the registry's decision for the version
    promotion_reasons: str | None = None
    champion: bool | None = None  # the version is the champion now


@dataclass(frozen=True)
class Status:
    """The lake's last nights and the registry's view of their models."""

    lake: str
    nights: list[Night]  # newest first
    runs_total: int
    registry: str  # the tracking URI, credentials masked
    model_name: str
    running: str | None = None  # "pid N since T": a run holds the lake's lock now
    registry_error: str | None = None  # why the registry part is missing
    champion: str | None = None
    champion_history: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return asdict(self)


def lake_status(lake_path: str | Path, registry: RegistrySettings, last: int = 7) -> Status:
    """The last ``last`` nights of the lake at ``lake_path``, newest first, with the registry's
    decisions (or ``registry_error`` when it cannot be read)."""
    lake = Lake(Path(lake_path).expanduser().resolve())  # not Lake.at: status creates nothing
    runs = sorted((p for p in (lake.root / "runs").glob("*") if p.is_dir()), key=_run_order) \
        if (lake.root / "runs").is_dir() else []
    nights = [read_night(run) for run in reversed(runs[-last:])] if last > 0 else []
    status = Status(lake=str(lake.root), nights=nights, runs_total=len(runs),
                    registry=registry.public_uri, model_name=registry.model_name,
                    running=lock_holder(lake))
    if not nights:
        return status
    return add_registry(status, registry)


def read_night(run_dir: Path) -> Night:
    """What one run folder records (missing or unreadable files leave fields unknown)."""
    run = _json(run_dir / "run.json") or {}
    gate = _json(Path(run.get("gate_path") or run_dir / "gate.json"))
    scorecard = _json(Path(run["scorecard_path"])) if run.get("scorecard_path") else None
    evaluation_path = run.get("evaluation_path")
    evaluation = _json(Path(evaluation_path)) if evaluation_path else None
    accounting = (scorecard or {}).get("accounting", {})
    model = MODEL_URI.search(run.get("mlflow") or "")
    night: dict[str, Any] = {
        "run": run_dir.name, "started": _started(run_dir.name), "finished": bool(run),
        "drops": run.get("drops"), "rows_read": accounting.get("rows_read"),
        "curated": accounting.get("curated"), "quarantined": accounting.get("quarantined"),
        "duplicates": accounting.get("duplicates"),
        "snapshot": (scorecard or {}).get("snapshot"),
        "model_version": model["version"] if model else None,
        "trained": (str(Path(evaluation_path).parent) == str(run_dir)) if evaluation_path and
        model else (False if model else None),
        "test_macro_f1": ((evaluation or {}).get("test") or {}).get("macro_f1"),
    }
    if gate is not None:
        night |= {"gate": "passed" if gate.get("passed") else "failed",
                  "gate_reason": gate.get("reason") or "; ".join(gate.get("failures") or []),
                  "warnings": list(gate.get("warnings") or [])}
    return Night(**night)


def add_registry(status: Status, registry: RegistrySettings) -> Status:
    """The status with each night's promotion decision and the champion from the registry."""
    from dataclasses import replace

    uri = registry.tracking_uri.get_secret_value()
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.is_file():  # MLflow would create it: status only reads
            return replace(status, registry_error=f"no MLflow database at {database} yet")
    elif why := unreachable(uri):
        return replace(status, registry_error=f"the registry is not reachable: {why}")
    if uri.startswith("http"):  # fail fast, not after MLflow's minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from finegate.core.registry import (
        PROMOTION_TAG,
        champion_history,
        client,
        current_champion,
    )

    try:
        mlflow = client(registry)
        champion = current_champion(mlflow, registry.model_name)
        history = champion_history(mlflow, registry.model_name) if champion else []
        decisions, reasons = {}, {}
        for version in {n.model_version for n in status.nights if n.model_version}:
            tags = mlflow.get_model_version(registry.model_name, version).tags
            decisions[version] = tags.get(PROMOTION_TAG, "not decided yet")
            reasons[version] = tags.get(f"{PROMOTION_TAG}.reasons")
    except Exception as err:  # noqa: BLE001 - any registry failure: show the lake part
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return replace(status, registry_error=f"the registry could not be read: "
                                              f"{type(err).__name__}: {first[:300]}")
    nights = [replace(n, promotion=decisions.get(n.model_version),
                      promotion_reasons=reasons.get(n.model_version),
                      champion=(n.model_version == champion) if n.model_version else None)
              for n in status.nights]
    return replace(status, nights=nights, champion=champion, champion_history=history)


def lock_holder(lake: Lake) -> str | None:
    """Who holds the lake's lock ("pid N since T"), read without taking it (taking it, even
    briefly, could refuse a run starting at that moment); None when no live process does."""
    try:
        holder = (lake.root / ".lock").read_text().strip()
    except OSError:
        return None
    match = re.match(r"pid (\d+) ", holder)
    if not match:
        return None
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return None  # a killed run's note (the lock itself went with its process)
    except PermissionError:
        pass  # alive, another user's
    return holder


def _run_order(run_dir: Path) -> tuple[str, float]:
    """Runs by their start time (the name's prefix, to the second), then by when they wrote
    their gate result (two runs started within one second)."""
    gate = run_dir / "gate.json"
    return run_dir.name[:16], (gate if gate.is_file() else run_dir).stat().st_mtime


def _json(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _started(run_name: str) -> str | None:
    try:
        return datetime.strptime(run_name[:16], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=UTC).isoformat()
    except ValueError:
        return None
