"""Golden-set decontamination: planted copies of golden rows are found, named and counted."""

import json
import random
from pathlib import Path

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
