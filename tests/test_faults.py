"""Faults: a Dask worker killed during ingest, two processes on one lake."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegate.core.lake import Lake, LakeBusy, lake_lock
from finegate.tasks.ingest import ingest_drop


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


HOLD_LOCK = """
import sys, time
from finegate.core.lake import Lake, lake_lock
with lake_lock(Lake.at(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_process_is_refused_and_a_dead_holder_frees_the_lake(tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lake.root)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LakeBusy, match=f"pid {holder.pid}"), lake_lock(lake):
            pass
    finally:
        holder.kill()  # a crashed run: the kernel drops its lock with the process
        holder.wait()
    with lake_lock(lake):
        assert f"pid {os.getpid()}" in (lake.root / ".lock").read_text()
