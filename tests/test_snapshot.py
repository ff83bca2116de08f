from pathlib import Path

import pyarrow.parquet as pq

from finegate.core.lake import Lake
from tests.factories import curate


def test_snapshot_drops_logged_duplicates(dirty_landing: Path, tmp_path: Path) -> None:
    snapshot, dedup, _ = curate(dirty_landing, Lake.at(tmp_path / "lake"))
    data = pq.read_table(snapshot.data_path).to_pandas()
    duplicates = pq.read_table(snapshot.duplicates_path).to_pandas()
    assert len(duplicates) == 2
    logged = set(zip(duplicates["source"], duplicates["position"], strict=False))
    assert not logged & set(zip(data["source"], data["position"], strict=False))
    assert data["id"].is_unique and data["text_hash"].is_unique
    assert snapshot.rows == len(data) == 120
    assert set(data["split"]) == {"train", "validation", "test"}
    # c-3 (sports) repeats j-4's text (tech): a conflicting duplicate, flagged on the kept row
    assert dedup.conflicts == 1
    flagged = data.loc[data["flags"].map(lambda f: "conflicting_duplicate" in f), "id"]
    assert flagged.tolist() == ["c-3"]


def test_same_input_gives_same_digest(dirty_landing: Path, tmp_path: Path) -> None:
    first, _, _ = curate(dirty_landing, Lake.at(tmp_path / "a"))
    second, _, _ = curate(dirty_landing, Lake.at(tmp_path / "b"))
    assert first.digest == second.digest
    (dirty_landing / "day1" / "Tech" / "new.txt").write_text("A brand new chip for phones.")
    third, _, _ = curate(dirty_landing, Lake.at(tmp_path / "a"))
    assert third.digest != first.digest
