"""The landing ledger: each night reads only new or changed drops, never one twice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from finegate.core.lake import Lake
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.ledger import ledger_drops, plan_drops, record_drop
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
