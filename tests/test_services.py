"""The flow against real services on loopback: Dask scheduler and workers, Prefect, MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from deploy.stack import free_port, wait_until
from finegate.core.lake import Lake
from finegate.tasks.clean import clean_drop
from finegate.tasks.ingest import ingest_drop
from tests.factories import LABEL_SET, LABELS, SYNTHETIC_TEXT_FILTERS

BIN = Path(sys.executable).parent


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``dask scheduler`` and two ``dask worker`` processes on loopback."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    address = f"tcp://127.0.0.1:{free_port()}"
    processes = [start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                        address.rsplit(":", 1)[1], "--dashboard-address", ":0"],
                       logs / "scheduler.log")]
    processes += [start([str(BIN / "dask"), "worker", address, "--nthreads", "1",
                         "--no-dashboard", "--name", f"w{i}"], logs / f"worker{i}.log")
                  for i in (1, 2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        stop(processes)


def test_ingest_and_clean_run_on_the_configured_scheduler(dask_scheduler: str,
                                                          dirty_landing: Path,
                                                          tmp_path: Path) -> None:
    from distributed import Client, get_task_stream

    lake = Lake.at(tmp_path / "lake")
    with Client(dask_scheduler) as client, get_task_stream(client) as stream:
        ingested = ingest_drop(dirty_landing, "day2", lake)
        cleaned = clean_drop("day2", lake, LABEL_SET)
        workers = set(client.scheduler_info()["workers"])
    assert ingested.rows_read == 97 and cleaned.rows_silver == 91
    assert pq.read_table(cleaned.silver_path).num_rows == 91
    ran = {(t["key"] if isinstance(t["key"], str) else t["key"][0]).split("-")[0]
           for t in stream.data}
    assert {"_ingest_partition", "_clean_partition"} <= ran
    assert {t["worker"] for t in stream.data} <= workers


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``prefect server start`` on loopback with its own home and database."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    process = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                     str(port)], home / "server.log",
                    env={"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
                         "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, "prefect server")
        yield url
    finally:
        stop([process])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback (SQLite backend, proxied artifact store)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                     "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                     "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                    root / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, "mlflow server")
        yield url
    finally:
        stop([process])


def test_flow_on_real_prefect_mlflow_and_dask(prefect_server: str, mlflow_server: str,
                                              dask_scheduler: str, dirty_landing: Path,
                                              tiny_model_dir: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    secret = "s3cr3t-t0ken-42"  # a fake credential in the MLflow URI: must never leak
    config = tmp_path / "finegate.yaml"
    config.write_text(yaml.safe_dump({
        "landing_path": str(dirty_landing), "lake_path": str(tmp_path / "lake"),
        "labels": LABELS,
        "mlflow_tracking_uri": mlflow_server.replace("http://", f"http://alice:{secret}@"),
        "dask": {"scheduler_address": dask_scheduler},
        "label_quality": {"policy": "flag"}, "filters": SYNTHETIC_TEXT_FILTERS,
        "train": {"model_path": str(tiny_model_dir), "device": "cpu", "cpu_max_steps": 3,
                  "cpu_max_length": 32, "cpu_batch_size": 8},
    }))
    run = subprocess.run([str(BIN / "finegate"), "run", "--config", str(config)],
                         env={**os.environ, "PREFECT_API_URL": prefect_server},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "rows read        129 = curated 120 + quarantined 7 + duplicates 2" in run.stdout

    [flow_run] = httpx.post(f"{prefect_server}/flow_runs/filter", json={}).json()
    assert flow_run["state"]["type"] == "COMPLETED"
    task_runs = httpx.post(f"{prefect_server}/task_runs/filter", json={"flow_runs": {
        "id": {"any_": [flow_run["id"]]}}}).json()
    names = {t["name"] for t in task_runs}
    assert {"ingest-day1", "ingest-day2", "clean-day1", "clean-day2"} <= names
    for stage in ("deduplicate", "review-labels", "run-gate", "finetune", "register",
                  "recount"):
        assert any(name.startswith(f"{stage}-") for name in names), stage
    assert all(t["state"]["type"] == "COMPLETED" for t in task_runs)
    artifacts = {a["key"] for a in httpx.post(f"{prefect_server}/artifacts/filter",
                                              json={}).json()}
    assert {"finegate-nightly", "finegate-scorecard", "finegate-gate", "finegate-evaluation",
            "finegate-training", "finegate-promotion", "finegate-report"} <= artifacts

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = client.get_model_version_by_alias("finegate-classifier", "champion")
    assert champion.version == "1"
    assert client.list_artifacts(champion.run_id, "quality")

    # The secret is nowhere: output, Prefect parameters and logs, MLflow, the lake's files.
    assert secret not in run.stdout + run.stderr
    assert "alice:***@" in run.stdout
    assert secret not in json.dumps(flow_run["parameters"])
    logs = httpx.post(f"{prefect_server}/logs/filter", json={"limit": 200}).json()
    assert logs and secret not in json.dumps(logs)
    mlflow_run = client.get_run(champion.run_id)
    assert secret not in json.dumps({**mlflow_run.data.params, **mlflow_run.data.tags})
    assert secret not in (champion.description or "")
    for path in (tmp_path / "lake").rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert secret.encode() not in path.read_bytes(), path
