import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from finegate.core.lake import Lake
from tests.factories import LABELS, curate, topic_rows


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


def test_a_new_drop_appends_linking_every_unchanged_partition(dirty_landing: Path,
                                                              tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    first, _, _ = curate(dirty_landing, lake)
    day1_text = pq.read_table(dirty_landing.parent / "lake" / "silver" / "day1").to_pandas()
    new_rows = topic_rows(12, seed=42, prefix="d3")
    # one row repeats a day1 text with another label: day1's kept row becomes a conflict
    repeated = day1_text.sort_values("id").iloc[0]
    other = next(label for label in LABELS if label != repeated["label"])
    new_rows.append({"id": "d3-conflict", "text": repeated["text"], "label": other})
    (dirty_landing / "day3").mkdir()
    (dirty_landing / "day3" / "rows.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in new_rows))
    second, _, _ = curate(dirty_landing, lake, drops=("day1", "day2", "day3"), new=("day3",))

    manifest = json.loads((Path(second.path) / "manifest.json").read_text())
    day2 = [name for name in manifest["partitions"] if name.startswith("day2-")]
    assert manifest["partitions_reused"] == len(day2)  # day2 untouched: linked, not rewritten
    for name in day2:
        old, new = (Path(s.data_path) / f"{name}.parquet" for s in (first, second))
        assert os.stat(old).st_ino == os.stat(new).st_ino
    data = pq.read_table(second.data_path).to_pandas()
    assert second.rows == first.rows + 12 == len(data)
    flagged = data.loc[data["flags"].map(lambda f: "conflicting_duplicate" in f), "id"]
    assert repeated["id"] in flagged.tolist()  # day1 was rewritten with the new flag

    fresh, _, _ = curate(dirty_landing, Lake.at(tmp_path / "fresh"),
                         drops=("day1", "day2", "day3"))
    assert fresh.digest == second.digest  # appending gives what a full rebuild gives


def test_review_lineage_leaves_out_what_a_review_did_not_say() -> None:
    """queue and annotated_at are optional in a review drop; read back from Parquet a null is
    NaN (truthy), which must not become review_queue:nan."""
    from types import SimpleNamespace

    from finegate.tasks.snapshot import review_lineage

    bare = SimpleNamespace(reviewed_by=["ann"], review_queue=float("nan"),
                           annotated_at=float("nan"))
    assert review_lineage(bare) == ("human_review", "reviewed_by:ann")
    full = SimpleNamespace(reviewed_by=["a", "b"], review_queue="q", annotated_at="t")
    assert review_lineage(full) == ("human_review", "reviewed_by:a+b", "review_queue:q",
                                    "annotated_at:t")
