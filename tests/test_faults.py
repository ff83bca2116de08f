"""Faults: a Dask worker killed during ingest does not change the result."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from finegate.lake import Lake
from tasks.ingest import ingest_drop


def big_drop(landing: Path, files: int = 16, rows: int = 6000) -> None:
    rng = random.Random(3)
    words = "market team vote phone film goal chip party award data".split()
    drop = landing / "big"
    drop.mkdir(parents=True)
    for n in range(files):
        lines = [json.dumps({"id": f"{n}-{i}", "label": "tech",
                             "text": " ".join(rng.choice(words) for _ in range(60))})
                 for i in range(rows)]
        (drop / f"part-{n:02d}.jsonl").write_text("\n".join(lines) + "\n")


def test_worker_killed_during_ingest_gives_the_same_result(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    big_drop(tmp_path / "landing")
    reference = ingest_drop(tmp_path / "landing", "big", Lake.at(tmp_path / "reference"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        killed: list[int] = []

        def kill_one_worker_while_busy() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(0.3)  # let it get into a partition
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one_worker_while_busy)
        killer.start()
        result = ingest_drop(tmp_path / "landing", "big", Lake.at(tmp_path / "lake"))
        killer.join()
    assert killed, "no worker was killed: the test did not exercise the fault"
    assert result.rows_read == reference.rows_read == 16 * 6000
    assert result.rows_bronze == reference.rows_bronze
    ids = sorted(pq.read_table(result.bronze_path, columns=["id"]).column("id").to_pylist())
    assert ids == sorted(pq.read_table(reference.bronze_path, columns=["id"])
                         .column("id").to_pylist())
