"""Cheap checks of the paths and services a run needs, made before any server starts.

Each returns the problems it found as sentences (what, where, what to do); an empty list is
fine. They only look: nothing is created or written.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from finegate.core.config import Config

# A refused connection answers at once; a host that drops packets is given this long.
CONNECT_TIMEOUT_S = 3.0
DEFAULT_PORTS = {"http": 80, "https": 443, "tcp": 8786, "tls": 8786}


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing answers at ``url``'s host and port (a TCP connect), or None when something
    does. URLs without a network address (``sqlite:``, a path) are not checked."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as err:
        return f"its port is not valid ({err})"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as err:
        return f"nothing answers at {parts.hostname}:{port} ({err.strerror or err})"


def lake_problems(config: Config) -> list[str]:
    """Whether the lake folder exists as a folder, or can be created, and can be written."""
    lake = Path(config.lake_path).expanduser()
    if lake.exists() and not lake.is_dir():
        return [f"lake_path {lake} is a file, not a folder; set lake_path (or "
                "FINEGATE_LAKE_PATH) to a folder"]
    existing = lake
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [f"lake_path {lake} cannot be created: {existing} is a file; set lake_path (or "
                "FINEGATE_LAKE_PATH) to a folder"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"lake_path {lake} cannot be written: {existing} is not writable by this user; "
                "fix its permissions or set lake_path to a writable folder"]
    return []


def service_problems(config: Config, prefect_api_url: str = "") -> list[str]:
    """Whether the configured MLflow tracking server, Dask scheduler and Prefect API answer."""
    problems = []
    mlflow = unreachable(config.tracking_uri())
    if mlflow:
        problems.append(f"the MLflow tracking server {config.public_tracking_uri()} is not "
                        f"reachable: {mlflow}; start it, or set mlflow_tracking_uri (or "
                        "FINEGATE_MLFLOW_TRACKING_URI) to a running server (empty: SQLite in "
                        "the lake)")
    address = config.dask.scheduler_address
    dask = unreachable(address if "://" in address else f"tcp://{address}") if address else None
    if dask:
        problems.append(f"the Dask scheduler {address} is not reachable: {dask}; start it, or "
                        "set dask.scheduler_address (empty: a local cluster per run)")
    prefect = unreachable(prefect_api_url) if prefect_api_url else None
    if prefect:
        problems.append(f"the Prefect API {prefect_api_url} (PREFECT_API_URL) is not "
                        f"reachable: {prefect}; start `prefect server start`, or unset "
                        "PREFECT_API_URL to run on a temporary local server")
    return problems
