import json
import random
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig
from finegate.core.lake import Lake
from finegate.tasks.clean import clean_drop
from finegate.tasks.dedup import KEY_COLUMNS, dedup_drops, exact_duplicates
from finegate.tasks.ingest import ingest_drop
from tests.factories import LABEL_SET, LABELS, perturb, topic_rows


def keys(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"id": i, "drop": d, "source": f"file:///{d}/{i}", "position": 0,
                          "label": "tech", "text_hash": h} for i, d, h in rows])


def test_keeps_first_by_drop_and_id_and_logs_the_rest() -> None:
    duplicates = exact_duplicates(keys([
        ("b", "day1", "h1"), ("a", "day2", "h1"), ("c", "day1", "h1"), ("d", "day1", "h2"),
    ]))
    assert sorted(duplicates["id"]) == ["a", "c"]
    assert set(duplicates["duplicate_of"]) == {"b"}
    assert set(duplicates["reason"]) == {"exact duplicate (same normalised text)"}


def test_reused_id_keeps_the_newest_drop() -> None:
    duplicates = exact_duplicates(keys([("a", "day1", "old"), ("a", "day2", "new")]))
    assert duplicates[["id", "drop"]].values.tolist() == [["a", "day1"]]
    assert "day2 is kept" in duplicates["reason"].iloc[0]


def test_no_duplicates_and_empty_input() -> None:
    assert exact_duplicates(keys([("a", "d", "h1"), ("b", "d", "h2")])).empty
    assert exact_duplicates(keys([]).reindex(columns=KEY_COLUMNS)).empty


def test_repeated_row_in_one_file_is_logged_once() -> None:
    rows = keys([("a", "day1", "h1"), ("a", "day1", "h1")]).assign(position=[3, 9])
    duplicates = exact_duplicates(rows)
    assert duplicates[["id", "position"]].values.tolist() == [["a", 9]]


def test_near_copies_across_drops_are_logged_and_label_conflicts_flagged(tmp_path: Path,
                                                                         ) -> None:
    rng = random.Random(4)
    originals = topic_rows(30, seed=21, prefix="o")
    for row in originals:
        row["text"] = row["text"] * 3  # ~90 words: room for a few edits
    copies = [{"id": f"copy-{i}", "text": perturb(r["text"], rng, share=0.02),
               "label": r["label"] if i < 4 else LABELS[(LABELS.index(r["label"]) + 1) % 3]}
              for i, r in enumerate(originals[:6])]  # copies 4 and 5 carry another label
    for drop, rows in (("day1", originals), ("day2", copies + [originals[7]])):
        (tmp_path / "landing" / drop).mkdir(parents=True)
        (tmp_path / "landing" / drop / "rows.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    lake = Lake.at(tmp_path / "lake")
    for drop in ("day1", "day2"):
        ingest_drop(tmp_path / "landing", drop, lake)
        clean_drop(drop, lake, LABEL_SET)
    result = dedup_drops(lake, ["day1", "day2"], DedupConfig())
    log = pq.read_table(result.duplicates_path).to_pandas().sort_values("id")
    assert (result.exact_duplicates, result.near_duplicates) == (1, 6)
    near = log.loc[log["cluster"].str.startswith("near-")]
    assert near["id"].tolist() == [f"copy-{i}" for i in range(6)]
    assert near["duplicate_of"].tolist() == [f"o-{i}" for i in range(6)]
    conflicts = pq.read_table(result.conflicts_path).to_pandas().sort_values("id")
    assert conflicts["id"].tolist() == ["o-4", "o-5"]  # flagged on the kept originals
    assert all(len(labels) == 2 for labels in conflicts["labels"])
