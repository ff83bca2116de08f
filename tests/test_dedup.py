import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig
from finegate.core.lake import Lake
from finegate.core.minhash import signatures
from finegate.tasks.clean import clean_drop
from finegate.tasks.dedup import KEY_COLUMNS, Rows, dedup_drops, find_duplicates, minhash_config
from finegate.tasks.ingest import ingest_drop
from tests.factories import LABEL_SET, LABELS, perturb, topic_rows

SETTINGS = DedupConfig()
CONFIG = minhash_config(SETTINGS)


def rows(keys: list[tuple[str, str, str]], position: list[int] | None = None) -> Rows:
    """Rows with the given (id, drop, text_hash) and unrelated random signatures."""
    frame = pd.DataFrame([{"id": i, "drop": d, "source": f"file:///{d}/{i}", "position": 0,
                           "label": "tech", "text_hash": h} for i, d, h in keys],
                         columns=KEY_COLUMNS)
    if position is not None:
        frame["position"] = position
    generator = np.random.default_rng(0)
    return Rows(frame, generator.integers(0, 2**32, (len(frame), CONFIG.num_perm), np.uint32))


def test_keeps_first_by_drop_and_id_and_logs_the_rest() -> None:
    duplicates = find_duplicates(rows([
        ("b", "day1", "h1"), ("a", "day2", "h1"), ("c", "day1", "h1"), ("d", "day1", "h2"),
    ]), SETTINGS)
    assert sorted(duplicates["id"]) == ["a", "c"]
    assert set(duplicates["duplicate_of"]) == {"b"}
    assert set(duplicates["reason"]) == {"exact duplicate (same normalised text)"}


def test_reused_id_keeps_the_newest_drop() -> None:
    duplicates = find_duplicates(rows([("a", "day1", "old"), ("a", "day2", "new")]), SETTINGS)
    assert duplicates[["id", "drop"]].values.tolist() == [["a", "day1"]]
    assert "day2 is kept" in duplicates["reason"].iloc[0]
    assert duplicates[["duplicate_of", "cluster"]].values.tolist() == [["a", "id-a"]]


def test_no_duplicates_and_empty_input() -> None:
    assert find_duplicates(rows([("a", "d", "h1"), ("b", "d", "h2")]), SETTINGS).empty
    assert find_duplicates(rows([]), SETTINGS).empty


def test_repeated_row_in_one_file_is_logged_once() -> None:
    duplicates = find_duplicates(rows([("a", "day1", "h1"), ("a", "day1", "h1")], [3, 9]),
                                 SETTINGS)
    assert duplicates[["id", "position"]].values.tolist() == [["a", 9]]


def write_drop(landing: Path, drop: str, records: list[dict]) -> None:
    (landing / drop).mkdir(parents=True)
    (landing / drop / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def land(lake: Lake, landing: Path, drop: str) -> None:
    ingest_drop(landing, drop, lake)
    clean_drop(drop, lake, LABEL_SET)


def long_rows(n: int, seed: int, prefix: str) -> list[dict]:
    """Rows of ~90 words: room for a few edits that keep them near duplicates."""
    return [{**r, "text": r["text"] * 3} for r in topic_rows(n, seed=seed, prefix=prefix)]


def test_near_copies_across_drops_are_logged_and_label_conflicts_flagged(tmp_path: Path,
                                                                         ) -> None:
    rng = random.Random(4)
    originals = long_rows(30, 21, "o")
    copies = [{"id": f"copy-{i}", "text": perturb(r["text"], rng, share=0.02),
               "label": r["label"] if i < 4 else LABELS[(LABELS.index(r["label"]) + 1) % 3]}
              for i, r in enumerate(originals[:6])]  # copies 4 and 5 carry another label
    write_drop(tmp_path / "landing", "day1", originals)
    write_drop(tmp_path / "landing", "day2", copies + [originals[7]])
    lake = Lake.at(tmp_path / "lake")
    for drop in ("day1", "day2"):
        land(lake, tmp_path / "landing", drop)
    result = dedup_drops(lake, ["day1", "day2"], DedupConfig())
    log = pq.read_table(result.duplicates_path).to_pandas().sort_values("id")
    assert (result.exact_duplicates, result.near_duplicates) == (1, 6)
    near = log.loc[log["cluster"].str.startswith("near-")]
    assert near["id"].tolist() == [f"copy-{i}" for i in range(6)]
    assert near["duplicate_of"].tolist() == [f"o-{i}" for i in range(6)]
    assert set(near["reason"]) == {"near duplicate (Jaccard >= 0.5)"}
    exact = log.loc[~log["cluster"].str.startswith("near-")]
    assert exact["cluster"].str.startswith("exact-").all() and len(exact) == 1
    conflicts = pq.read_table(result.conflicts_path).to_pandas().sort_values("id")
    assert conflicts["id"].tolist() == ["o-4", "o-5"]  # flagged on the kept originals
    assert all(len(labels) == 2 for labels in conflicts["labels"])


def test_a_late_copy_of_an_early_row_is_caught_without_rehashing_the_history(
        tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    early = long_rows(30, 31, "early")
    write_drop(landing, "night01", early)
    land(lake, landing, "night01")
    first = dedup_drops(lake, ["night01"], DedupConfig())
    assert first.rows_hashed == 30 and first.duplicates == 0
    index = lake.dedup_index / "rows" / "night01.parquet"
    stamp = index.stat().st_mtime_ns
    drops = ["night01"]
    for night in range(2, 8):  # six nights of unrelated rows
        drop = f"night{night:02d}"
        write_drop(landing, drop, long_rows(20, 100 + night, drop))
        land(lake, landing, drop)
        drops.append(drop)
        assert dedup_drops(lake, drops, DedupConfig()).rows_hashed == 20
    rng = random.Random(8)
    late = [{"id": "late-copy", "text": perturb(early[3]["text"], rng, share=0.03),
             "label": early[3]["label"]}, {"id": "late-exact", **{
                 k: early[5][k] for k in ("text", "label")}}]
    write_drop(landing, "night08", late + long_rows(10, 999, "fresh"))
    land(lake, landing, "night08")
    result = dedup_drops(lake, [*drops, "night08"], DedupConfig())
    assert result.rows_hashed == 12  # only tonight's rows were hashed
    assert index.stat().st_mtime_ns == stamp  # the early drop's signatures were not recomputed
    log = pq.read_table(result.duplicates_path).to_pandas().set_index("id")
    assert log.loc["late-copy", "duplicate_of"] == "early-3"
    assert log.loc["late-copy", "cluster"] == "near-early-3"
    assert log.loc["late-exact", "duplicate_of"] == "early-5"
    assert log.loc["late-exact", "cluster"].startswith("exact-")
    assert result.rows_in == 30 + 6 * 20 + 12 and result.duplicates == 2


def test_incremental_nights_log_what_one_full_pass_logs(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    rng = random.Random(11)
    base = long_rows(40, 41, "b")
    drops = {"d1": base[:20],
             "d2": base[20:] + [{**base[2], "id": "b-2x"}],  # exact copy, other id
             "d3": [{"id": f"n{i}", "text": perturb(base[i]["text"], rng, 0.02),
                     "label": base[i]["label"]} for i in (1, 25)]
             + [{"id": "b-30", "text": "A new version of row thirty.", "label": "tech"}]}
    for drop, records in drops.items():
        write_drop(landing, drop, records)
    nightly, full = Lake.at(tmp_path / "nightly"), Lake.at(tmp_path / "full")
    for lake in (nightly, full):
        for drop in drops:
            land(lake, landing, drop)
    for n in range(1, 4):
        incremental = dedup_drops(nightly, list(drops)[:n], DedupConfig())
    once = dedup_drops(full, list(drops), DedupConfig())
    columns = ["id", "drop", "position", "duplicate_of", "cluster", "reason"]

    def logged(result):
        frame = pq.read_table(result.duplicates_path).to_pandas()[columns]
        return sorted(map(tuple, frame.values.tolist()))

    assert logged(incremental) == logged(once)
    assert {r[0] for r in logged(once)} == {"b-2x", "n1", "n25", "b-30"}
    assert once.rows_hashed == 44 and incremental.rows_hashed == 3


def test_a_re_ingested_drop_rebuilds_the_index(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_drop(landing, "a", long_rows(10, 1, "a"))
    write_drop(landing, "b", long_rows(10, 2, "b"))
    for drop in ("a", "b"):
        land(lake, landing, drop)
    dedup_drops(lake, ["a", "b"], DedupConfig())
    (landing / "a" / "rows.jsonl").write_text(json.dumps({**long_rows(1, 2, "b")[0],
                                                          "id": "a-new"}) + "\n")
    land(lake, landing, "a")  # drop a changed: it now repeats b's first row
    result = dedup_drops(lake, ["a", "b"], DedupConfig())
    assert result.rows_hashed == 11 and result.rows_in == 11
    log = pq.read_table(result.duplicates_path).to_pandas()
    assert log[["id", "duplicate_of"]].values.tolist() == [["b-0", "a-new"]]


def test_files_a_killed_night_left_for_an_unrecorded_drop_are_cleared(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_drop(landing, "a", long_rows(10, 1, "a"))
    land(lake, landing, "a")
    dedup_drops(lake, ["a"], DedupConfig())
    leftovers = [lake.dedup_index / "rows" / "b.parquet", lake.dedup / "duplicates" / "b.parquet",
                 lake.dedup / "conflicts" / "b.parquet"]  # written, never recorded as indexed
    for path in leftovers:
        path.write_bytes(b"half a night")
    result = dedup_drops(lake, ["a"], DedupConfig())
    assert not any(path.exists() for path in leftovers)
    assert result.rows_in == 10 and result.duplicates == 0


def test_near_duplicates_are_judged_on_exact_jaccard_read_from_silver(tmp_path: Path) -> None:
    """A copy whose exact bigram Jaccard is just above 0.5 but whose MinHash estimate is below
    is logged; one just below whose estimate is above is not (reading only candidate texts)."""
    def shifted(seed: int, shift: int, n: int = 101) -> tuple[str, str]:
        stems = ["match", "chip", "vote", "cloud", "law"]
        words = [f"{stems[k % 5]}{seed}x{k}" for k in range(n + shift)]
        return " ".join(words[:n]), " ".join(words[shift:shift + n])

    def bigrams(text: str) -> set[tuple[str, str]]:
        words = text.casefold().split()
        return set(zip(words, words[1:], strict=False))

    above, below = shifted(0, 33), shifted(4, 34)
    for (a, b), truth in ((above, 67 / 133), (below, 66 / 134)):  # ground truth, computed
        assert len(bigrams(a) & bigrams(b)) / len(bigrams(a) | bigrams(b)) == truth
    estimate = [(s[0] == s[1]).mean() for s in (signatures(list(above), CONFIG),
                                                  signatures(list(below), CONFIG))]
    assert estimate[0] < 0.5 <= estimate[1]  # the estimate would get both wrong
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_drop(landing, "day1", [{"id": "above", "text": above[0], "label": "tech"},
                                 {"id": "below", "text": below[0], "label": "tech"},
                                 *long_rows(20, 5, "other")])
    write_drop(landing, "day2", [{"id": "above-copy", "text": above[1], "label": "tech"},
                                 {"id": "below-copy", "text": below[1], "label": "tech"}])
    for drop in ("day1", "day2"):
        land(lake, landing, drop)
    dedup_drops(lake, ["day1"], SETTINGS)
    result = dedup_drops(lake, ["day1", "day2"], SETTINGS)  # day2 against the stored index
    log = pq.read_table(result.duplicates_path).to_pandas()
    assert log[["id", "duplicate_of", "reason"]].values.tolist() == [
        ["above-copy", "above", "near duplicate (Jaccard >= 0.5)"]]
