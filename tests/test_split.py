from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core.config import SplitConfig
from finegate.core.lake import Lake
from finegate.core.results import SnapshotResult, SplitError
from finegate.core.splits import assign_split
from tests.factories import curate, topic_rows


def test_split_is_stable_and_follows_shares() -> None:
    ids = pd.Series([f"row-{i}" for i in range(5000)])
    shares = SplitConfig(train=0.7, validation=0.1, test=0.2)
    first, second = assign_split(ids, shares), assign_split(ids.iloc[::-1], shares)
    assert (first == second.sort_index()).all()
    counts = first.value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.7, abs=0.03)
    assert counts["test"] == pytest.approx(0.2, abs=0.03)


def test_new_and_removed_rows_never_move_a_curated_row(dirty_landing: Path,
                                                       tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    before, _, _ = curate(dirty_landing, lake)
    splits = pq.read_table(before.data_path, columns=["id", "split"]).to_pandas()
    # a later delivery adds 60 rows to one drop and removes a file from the other
    extra = pd.DataFrame(topic_rows(60, seed=123, prefix="late"))
    extra.to_parquet(dirty_landing / "day2" / "late.parquet", index=False)
    (dirty_landing / "day2" / "rows.csv").unlink()
    after, _, _ = curate(dirty_landing, lake)
    now = pq.read_table(after.data_path, columns=["id", "split"]).to_pandas()
    kept = splits.merge(now, on="id", suffixes=("_before", "_after"))
    assert len(kept) >= 80 and len(now) > len(kept)  # both old and new rows are present
    assert (kept["split_before"] == kept["split_after"]).all()


def test_empty_test_split_is_an_error() -> None:
    snapshot = SnapshotResult(digest="d", path="p", data_path="p/data", duplicates_path="p/dup",
                              rows=2, drops=["a"], split_rows={"train": 2, "test": 0})
    with pytest.raises(SplitError, match="no test rows"):
        snapshot.check_trainable()
