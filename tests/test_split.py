import json
import random
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core.config import DedupConfig, SplitConfig
from finegate.core.lake import Lake
from finegate.core.results import SnapshotResult, SplitError
from finegate.core.splits import assign_split
from tests.factories import curate, perturb, topic_rows


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


def exact_jaccard(a: str, b: str) -> float:
    """Jaccard of word-bigram sets, computed exactly (ground truth, not the detector)."""
    def bigrams(text: str) -> set[str]:
        words = re.findall(r"\w+", text.casefold())
        return {" ".join(words[i:i + 2]) for i in range(len(words) - 1)}
    x, y = bigrams(a), bigrams(b)
    return len(x & y) / len(x | y)


def straddling(tmp_path: Path, settings: DedupConfig) -> tuple[int, int]:
    """Retold rows (~20% of words replaced: related, not duplicates) arriving a night after
    their originals: (pairs with exact Jaccard >= 0.45 both kept, of them split apart)."""
    rng = random.Random(12)
    originals = [{**r, "text": r["text"] * 3} for r in topic_rows(80, seed=61, prefix="o")]
    retold = [{"id": f"r-{i}", "text": perturb(r["text"], rng, share=0.2), "label": r["label"]}
              for i, r in enumerate(originals)]
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    for drop, rows in (("night1", originals + retold[70:]), ("night2", retold[:70])):
        (landing / drop).mkdir(parents=True)
        (landing / drop / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, _, _ = curate(landing, lake, drops=("night1",), dedup_settings=settings)
    before = pq.read_table(first.data_path, columns=["id", "split"]).to_pandas()
    second, _, _ = curate(landing, lake, drops=("night1", "night2"), new=("night2",),
                          dedup_settings=settings)
    data = pq.read_table(second.data_path, columns=["id", "split"]).to_pandas()
    again = before.merge(data, on="id", suffixes=("_1", "_2"))
    assert (again["split_1"] == again["split_2"]).all() and len(again) == len(before)
    split = dict(zip(data["id"], data["split"], strict=True))
    related = [(f"o-{i}", f"r-{i}") for i in range(80) if {f"o-{i}", f"r-{i}"} <= split.keys()
               and exact_jaccard(originals[i]["text"], retold[i]["text"]) >= 0.45]
    return len(related), sum(split[a] != split[b] for a, b in related)


def test_related_rows_do_not_straddle_splits_even_across_nights(tmp_path: Path) -> None:
    pairs, apart = straddling(tmp_path / "on", DedupConfig())
    assert pairs >= 30 and apart <= 1  # related rows share their split (LSH misses ~3%)
    pairs_off, apart_off = straddling(tmp_path / "off", DedupConfig(related_threshold=0.5))
    assert apart_off >= 0.2 * pairs_off  # without it, a third of such pairs straddle
