import pandas as pd

from tasks.dedup import KEY_COLUMNS, exact_duplicates


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
