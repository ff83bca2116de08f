"""Golden-set decontamination: planted copies of golden rows are found, named and counted."""

import json
import random
from pathlib import Path

import pandas as pd

from finegate.core.config import DedupConfig
from finegate.core.lake import Lake
from finegate.tasks.leakage import check_leakage
from tests.factories import LABEL_SET, curate, perturb, topic_rows


def write_golden(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_planted_golden_copies_are_found_in_their_split(dirty_landing: Path,
                                                        tmp_path: Path) -> None:
    golden = [{**r, "text": r["text"] * 3} for r in topic_rows(12, seed=501, prefix="g")]
    rng = random.Random(3)
    exact = {"id": "leak-exact", "text": golden[0]["text"], "label": golden[0]["label"]}
    near = {"id": "leak-near", "text": perturb(golden[1]["text"], rng, share=0.1),
            "label": golden[1]["label"]}
    (dirty_landing / "day3").mkdir()
    (dirty_landing / "day3" / "rows.jsonl").write_text(
        json.dumps(exact) + "\n" + json.dumps(near) + "\n")
    lake = Lake.at(tmp_path / "lake")
    snapshot, _, _ = curate(dirty_landing, lake, drops=("day1", "day2", "day3"))
    result = check_leakage(lake, snapshot, str(write_golden(tmp_path / "golden.jsonl", golden)),
                           LABEL_SET, DedupConfig())

    report = json.loads(Path(result.leakage_path).read_text())
    found = {(p["golden_row"], p["id"], p["kind"]) for p in report["pairs"]}
    assert found == {(0, "leak-exact", "exact"), (1, "leak-near", "near")}
    assert result.leaked_golden == [0, 1] and result.golden_rows == 12
    assert sum(result.leaked_by_split.values()) == 2
    splits = {p["id"]: p["split"] for p in report["pairs"]}
    assert result.leaked_by_split["train"] == list(splits.values()).count("train")


def test_no_golden_set_and_a_clean_golden_set_leak_nothing(dirty_landing: Path,
                                                           tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    snapshot, _, _ = curate(dirty_landing, lake)
    assert check_leakage(lake, snapshot, "", LABEL_SET, DedupConfig()).leaked_golden == []
    clean = write_golden(tmp_path / "golden.jsonl", topic_rows(10, seed=77, prefix="g"))
    result = check_leakage(lake, snapshot, str(clean), LABEL_SET, DedupConfig())
    assert result.leaked_golden == [] and result.golden_rows == 10


def test_a_golden_row_whose_copy_was_deduplicated_away_is_no_leak(dirty_landing: Path,
                                                                  tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    snapshot, dedup, _ = curate(dirty_landing, lake)
    # j-2 was delivered twice: the second copy is in the dedup log, the first in the snapshot
    rows = [json.loads(line) for line in
            (dirty_landing / "day2" / "rows.jsonl").read_text().splitlines()[:3]]
    result = check_leakage(lake, snapshot, str(write_golden(tmp_path / "g.jsonl", rows[2:3])),
                           LABEL_SET, DedupConfig())
    report = json.loads(Path(result.leakage_path).read_text())
    assert [p["id"] for p in report["pairs"]] == ["j-2"]  # one pair: the kept row only
    assert dedup.exact_duplicates >= 1


def rewrite_snapshot(data_path: str, change) -> None:
    """Apply ``change`` to every partition of a snapshot (planting rows and splits)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finegate.core.schemas import CURATED_SCHEMA

    for part in Path(data_path).glob("*.parquet"):
        frame = change(pq.read_table(part).to_pandas())
        part.unlink()  # partitions may be hard links into an earlier snapshot
        pq.write_table(pa.Table.from_pandas(frame, schema=CURATED_SCHEMA,
                                            preserve_index=False), part)


def test_cross_split_pairs_are_counted_and_named(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    originals = [{**r, "text": r["text"] * 3} for r in topic_rows(60, seed=31, prefix="o")]
    retold = [{"id": f"r-{i}", "text": perturb(originals[i]["text"], random.Random(i), 0.2),
               "label": originals[i]["label"]} for i in range(30)]
    copy = {"id": "copy-0", "text": originals[0]["text"], "label": originals[0]["label"]}
    for drop, rows in (("n1", originals), ("n2", [*retold, copy])):
        (landing / drop).mkdir(parents=True)
        write_golden(landing / drop / "rows.jsonl", rows)
    snapshot, dedup, _ = curate(landing, lake, drops=("n1", "n2"))
    clean = check_leakage(lake, snapshot, "", LABEL_SET, DedupConfig())
    assert (clean.cross_split_exact, clean.cross_split_near) == (0, 0)  # anchors held

    index = pq.read_table(lake.dedup_index / "rows").to_pandas()
    data = pq.read_table(snapshot.data_path).to_pandas().set_index("id")
    pair = next(f"r-{i}" for i in range(30) if f"r-{i}" in data.index
                and index.set_index("id").loc[f"r-{i}", "split_anchor"] == f"o-{i}")
    moved = "test" if data.loc[pair, "split"] != "test" else "train"
    logged = index.set_index("id").loc["copy-0"]  # the exact copy dedup logged
    assert "copy-0" not in data.index and dedup.exact_duplicates >= 1
    other = "validation" if data.loc["o-0", "split"] != "validation" else "train"

    def plant(frame):  # a related row moved to another split, and the logged copy put back
        frame.loc[frame["id"] == pair, "split"] = moved
        if (frame["id"] == "o-0").any():
            twin = frame.loc[frame["id"] == "o-0"].assign(
                id="copy-0", source=logged["source"], position=logged["position"],
                drop=logged["drop"], split=other)
            frame = pd.concat([frame, twin], ignore_index=True)
        return frame

    rewrite_snapshot(snapshot.data_path, plant)
    planted = check_leakage(lake, snapshot, "", LABEL_SET, DedupConfig())
    assert planted.cross_split_exact == 1 and planted.cross_split_near >= 1
    report = json.loads(Path(planted.leakage_path).read_text())
    named = {(p["kind"], frozenset((p["id_a"], p["id_b"]))) for p in report["cross_split_pairs"]}
    assert ("exact", frozenset(("o-0", "copy-0"))) in named
    assert ("near", frozenset((pair, pair.replace("r-", "o-")))) in named
    assert sum(report["cross_split_by_splits"].values()) == (
        planted.cross_split_exact + planted.cross_split_near)


def test_golden_near_matches_are_judged_on_exact_jaccard() -> None:
    """Golden copies at exact bigram Jaccard 0.504 (estimate below 0.5) and 0.493 (estimate
    above): only the first is a near leak once the found rows' shingle sets are given."""
    import numpy as np

    from finegate.core.dedup_index import Rows, minhash_config
    from finegate.core.minhash import shingle_sets, signatures
    from finegate.core.text import text_hash
    from finegate.tasks.leakage import matching_pairs

    def shifted(seed: int, shift: int, n: int = 101) -> tuple[str, str]:
        stems = ["match", "chip", "vote", "cloud", "law"]
        words = [f"{stems[k % 5]}{seed}x{k}" for k in range(n + shift)]
        return " ".join(words[:n]), " ".join(words[shift:shift + n])

    config = minhash_config(DedupConfig())
    (above, above_copy), (below, below_copy) = shifted(0, 33), shifted(4, 34)
    found = Rows(pd.DataFrame({"text_hash": [text_hash(above), text_hash(below)]}),
                 signatures([above, below], config))
    golden = [above_copy, below_copy]
    by_estimate = matching_pairs(golden, found, config, 0.5)
    assert [(g, f) for g, f, _, _ in by_estimate] == [(1, 1)]  # the estimate gets both wrong
    sets = (shingle_sets([above, below], 2), np.array([True, True]))
    by_exact = matching_pairs(golden, found, config, 0.5, sets)
    assert [(g, f, kind) for g, f, kind, _ in by_exact] == [(0, 0, "near")]
    assert abs(by_exact[0][3] - 67 / 133) < 1e-12
