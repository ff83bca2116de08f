import random
from pathlib import Path

import pytest

from finegate.core.history import record_history
from finegate.core.lake import Lake, write_json
from finegate.core.results import Accounting
from finegate.tasks.quality import (
    AccountingError,
    account_rows,
    build_scorecard,
    check_accounting,
    class_balance,
)
from tests.factories import curate, topic_text


def test_class_balance() -> None:
    assert class_balance({"a": 5, "b": 5}, ["a", "b"]) == pytest.approx(1.0)
    # all rows in one of five classes: 1 - (0.8^2 + 4 * 0.2^2) = 0.2
    assert class_balance({"a": 10}, ["a", "b", "c", "d", "e"]) == pytest.approx(0.2)
    assert class_balance({}, ["a", "b"]) == 0.0


def test_scorecard_accounts_for_every_row(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    snapshot, dedup, review = curate(dirty_landing, lake)
    card = build_scorecard(129, snapshot, lake, ["sports", "tech", "politics"], dedup, review)
    assert card["accounting"] == {"rows_read": 129, "curated": 120, "quarantined": 7,
                                  "duplicates": 2, "holds": True}
    assert card["rows"] == 120
    assert card["duplicate_ratio"] == pytest.approx(2 / 122)
    assert card["exact_duplicate_ratio"] == pytest.approx(2 / 122)
    assert card["deltas"] == {"previous_snapshot": None}
    assert card["empty_ratio"] == pytest.approx(2 / 129)
    assert 0.9 < card["class_balance"] <= 1.0
    assert card["length_words"]["min"] >= 10
    check_accounting(Accounting(129, 120, 7, 2))


def test_lost_rows_fail_the_identity(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    snapshot, dedup, review = curate(dirty_landing, lake)
    card = build_scorecard(130, snapshot, lake, ["sports", "tech"], dedup, review)
    assert card["accounting"]["holds"] is False
    with pytest.raises(AccountingError, match=r"rows read \(130\) != curated \(120\)"):
        check_accounting(account_rows(130, snapshot, lake))


def test_second_snapshot_reports_deltas(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    labels = ["sports", "tech", "politics"]
    snapshot, dedup, review = curate(dirty_landing, lake)
    first = build_scorecard(129, snapshot, lake, labels, dedup, review)
    record_history(lake, first["snapshot"], write_json(Path(snapshot.path) / "scorecard.json",
                                                       first))
    rng = random.Random(99)
    for i in range(6):  # six new, distinct tech articles
        (dirty_landing / "day1" / "Tech" / f"extra-{i}.txt").write_text(topic_text("tech", rng))
    snapshot, dedup, review = curate(dirty_landing, lake)
    second = build_scorecard(135, snapshot, lake, labels, dedup, review)
    assert second["deltas"]["previous_snapshot"] == first["snapshot"]
    assert second["deltas"]["rows"] == 6
    assert second["deltas"]["label_distribution_shift"] > 0
    assert second["drift"]["new_rows"] == 6
    assert second["drift"]["label_linf"] > 0


def test_empty_landing_gives_an_empty_snapshot_that_adds_up(tmp_path: Path) -> None:
    for drop in ("day1", "day2"):
        (tmp_path / "landing" / drop).mkdir(parents=True)
    lake = Lake.at(tmp_path / "lake")
    snapshot, dedup, review = curate(tmp_path / "landing", lake, noise=True)
    card = build_scorecard(0, snapshot, lake, ["sports", "tech"], dedup, review)
    assert card["rows"] == 0 and card["accounting"]["holds"]
    assert card["class_balance"] == 0.0
    assert "skipped" in card["noise_detection"]
