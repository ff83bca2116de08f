"""The landing ledger: each night reads only new or changed drops, never one twice."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegate.core.lake import Lake
from finegate.tasks import ledger
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.ledger import (
    ledger_drops,
    plan_drops,
    record_drop,
    retract_drops,
    retracted_rows,
)
from tests.factories import topic_rows


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def ingest_planned(landing: Path, lake: Lake) -> list[str]:
    """What a night does with the ledger: plan, ingest each planned drop, record it."""
    plan = plan_drops(landing, lake)
    for drop in plan.to_ingest:
        result = ingest_drop(landing, drop, lake)
        record_drop(lake, drop, plan.scans[drop], result.rows_read)
    return plan.to_ingest


def test_only_new_drops_are_read(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_rows(landing / "day1" / "a.jsonl", topic_rows(6, seed=1, prefix="a"))
    assert ingest_planned(landing, lake) == ["day1"]
    assert ingest_planned(landing, lake) == []
    write_rows(landing / "day2" / "b.jsonl", topic_rows(4, seed=2, prefix="b"))
    assert ingest_planned(landing, lake) == ["day2"]
    assert ledger_drops(lake) == {"day1": 6, "day2": 4}


def test_a_touched_but_identical_file_is_not_read_again(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    path = landing / "day1" / "a.jsonl"
    write_rows(path, topic_rows(6, seed=1, prefix="a"))
    ingest_planned(landing, lake)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    plan = plan_drops(landing, lake)
    assert plan.to_ingest == [] and plan.unchanged == ["day1"]


def test_a_changed_drop_is_a_new_version_that_replaces_the_old_rows(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    path = landing / "day1" / "a.jsonl"
    write_rows(path, topic_rows(6, seed=1, prefix="a"))
    ingest_planned(landing, lake)
    write_rows(path, topic_rows(9, seed=1, prefix="a"))  # the same file, re-delivered longer
    assert ingest_planned(landing, lake) == ["day1"]
    ledger = json.loads((lake.root / "ledger.json").read_text())["drops"]["day1"]
    assert ledger["version"] == 2 and ledger["rows_read"] == 9
    assert ledger_drops(lake) == {"day1": 9}  # replaced, not 6 + 9
    bronze = lake.root / "bronze" / "day1"
    assert pq.read_table(bronze).num_rows == 9


def test_a_file_added_to_an_old_drop_reingests_that_drop(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_rows(landing / "day1" / "a.jsonl", topic_rows(6, seed=1, prefix="a"))
    write_rows(landing / "day2" / "b.jsonl", topic_rows(4, seed=2, prefix="b"))
    ingest_planned(landing, lake)
    write_rows(landing / "day1" / "late.jsonl", topic_rows(3, seed=3, prefix="late"))
    assert ingest_planned(landing, lake) == ["day1"]
    assert ledger_drops(lake) == {"day1": 9, "day2": 4}


@pytest.mark.parametrize("rows", [6, 6000], ids=["small-file", "file-over-1MiB"])
def test_a_same_size_edit_with_the_mtime_restored_is_read_again(tmp_path: Path,
                                                                 rows: int) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    path = landing / "day1" / "a.jsonl"
    write_rows(path, topic_rows(rows, seed=1, prefix="a"))
    ingest_planned(landing, lake)
    before = path.stat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"label": "sports"', b'"label": "sportz"', 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the edit hides its tracks
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert ingest_planned(landing, lake) == ["day1"]


def test_an_untouched_large_file_is_not_hashed_again(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_rows(landing / "day1" / "big.jsonl", topic_rows(6000, seed=1, prefix="a"))
    write_rows(landing / "day1" / "small.jsonl", topic_rows(6, seed=2, prefix="b"))
    assert (landing / "day1" / "big.jsonl").stat().st_size > ledger.ALWAYS_HASH_BYTES
    ingest_planned(landing, lake)
    hashed = []
    monkeypatch.setattr(ledger, "file_sha256", lambda p: hashed.append(p.name) or "x")
    plan_drops(landing, lake)
    assert hashed == ["small.jsonl"]  # small files are always hashed, cheap and safe


def test_a_drop_removed_from_the_landing_zone_is_retracted(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_rows(landing / "day1" / "a.jsonl", topic_rows(6, seed=1, prefix="a"))
    write_rows(landing / "day2" / "b.jsonl", topic_rows(4, seed=2, prefix="b"))
    ingest_planned(landing, lake)
    shutil.move(landing / "day1", tmp_path / "day1-taken-back")
    plan = plan_drops(landing, lake)
    assert plan.retracted == ["day1"] and "removed from the landing zone: day1" in plan.describe()
    assert retract_drops(lake, plan.retracted) == {"day1": 6}
    assert ledger_drops(lake) == {"day2": 4} and retracted_rows(lake) == 6
    kept = json.loads(lake.ledger.read_text())["drops"]["day1"]
    assert kept["retracted_at"] and kept["rows_read"] == 6  # kept for audit
    assert plan_drops(landing, lake).retracted == []  # retracted once, not every night
    shutil.move(tmp_path / "day1-taken-back", landing / "day1")  # delivered again
    assert ingest_planned(landing, lake) == ["day1"]
    assert ledger_drops(lake) == {"day1": 6, "day2": 4} and retracted_rows(lake) == 0


def test_stale_staging_folders_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    stale, fresh = lake.staging(), lake.staging()
    (stale / "0").mkdir()
    (stale / "0" / "part-00000.parquet").write_bytes(b"half written")
    two_hours_ago = time.time() - 7200
    for path in (stale / "0" / "part-00000.parquet", stale / "0", stale):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert lake.remove_stale_staging(older_than_s=3600) == 1
    assert not stale.exists() and fresh.is_dir()
    assert lake.remove_stale_staging(older_than_s=3600) == 0
