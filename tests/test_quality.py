import random
import shutil
from pathlib import Path

import pytest

from finegate.core.history import record_history
from finegate.core.lake import Lake, write_json
from finegate.core.results import Accounting
from finegate.tasks import ingest
from finegate.tasks.clean import clean_drop
from finegate.tasks.ledger import (
    ledger_drops,
    plan_drops,
    record_drop,
    retract_drops,
    retracted_rows,
)
from finegate.tasks.quality import (
    AccountingError,
    account_rows,
    build_scorecard,
    check_accounting,
    check_ingest_count,
    class_balance,
)
from tests.factories import LABEL_SET, curate, topic_text


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
                                  "duplicates": 2, "retracted": 0, "holds": True}
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


def ingest_and_clean(landing: Path, lake: Lake, drops: list[str]) -> int:
    """Ingest and clean drops as a night does, recording them in the ledger; rows read."""
    plan = plan_drops(landing, lake)
    for drop in drops:
        ingested = ingest.ingest_drop(landing, drop, lake)
        clean_drop(drop, lake, LABEL_SET)
        record_drop(lake, drop, plan.scans[drop], ingested.rows_read)
    return sum(ledger_drops(lake).values())


def test_a_reader_that_drops_a_row_fails_the_accounting(dirty_landing: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    parse_jsonl = ingest._parse_jsonl
    monkeypatch.setattr(ingest, "_parse_jsonl", lambda *args: parse_jsonl(*args)[:-1])
    lake = Lake.at(tmp_path / "lake")
    rows_read = ingest_and_clean(dirty_landing, lake, ["day1", "day2"])
    snapshot, _, _ = curate(dirty_landing, lake, new=())
    accounting = account_rows(rows_read, snapshot, lake)
    assert rows_read == 129 and not accounting.holds
    # the line dropped is a planted duplicate: it vanished from the dedup log, not from the count
    with pytest.raises(AccountingError, match=r"rows read \(129\) != .* duplicates \(1\)"):
        check_accounting(accounting)
    day2 = ingest.ingest_drop(dirty_landing, "day2", lake)
    assert day2.miscounted == ["day2/rows.jsonl holds 35 row(s), the reader returned 34"]
    with pytest.raises(AccountingError, match="drop 'day2' does not add up: day2/rows.jsonl"):
        check_ingest_count(day2)


def test_a_retracted_drop_leaves_the_snapshot_and_is_counted_apart(dirty_landing: Path,
                                                                   tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    ingest_and_clean(dirty_landing, lake, ["day1", "day2"])
    curate(dirty_landing, lake, new=())
    shutil.rmtree(dirty_landing / "day1")  # the user takes back the first delivery
    assert retract_drops(lake, plan_drops(dirty_landing, lake).retracted) == {"day1": 32}
    drops = list(ledger_drops(lake))
    snapshot, _, _ = curate(dirty_landing, lake, drops=tuple(drops), new=())
    accounting = account_rows(sum(ledger_drops(lake).values()), snapshot, lake,
                              retracted=retracted_rows(lake))
    assert accounting == Accounting(rows_read=97, curated=89, quarantined=6, duplicates=2,
                                    retracted=32)
    assert accounting.holds and snapshot.drops == ["day2"]
