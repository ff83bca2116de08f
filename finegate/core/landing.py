"""The landing zone: where users drop files, one sub-folder per delivery ("drop")."""

from __future__ import annotations

from pathlib import Path


def list_drops(landing: Path) -> list[str]:
    """The drops waiting in the landing zone: its sub-folders, in name order."""
    if not landing.is_dir():
        raise FileNotFoundError(
            f"landing zone {landing} does not exist; set landing_path in the config "
            "(or FINEGATE_LANDING_PATH) to the folder where drops arrive"
        )
    return sorted(p.name for p in landing.iterdir() if p.is_dir() and not p.name.startswith("."))


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with symlinks and ``..`` resolved, stays under ``root``."""
    return path.resolve().is_relative_to(root.resolve())
