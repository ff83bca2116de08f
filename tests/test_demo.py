import json
from pathlib import Path

import pandas as pd

from finegate.demo import DROPS, PLANTED_JUNK, prepare_demo_landing


def test_demo_landing_has_four_formats_and_every_article(tmp_path: Path) -> None:
    files = prepare_demo_landing(tmp_path / "landing", tmp_path / "golden.jsonl")
    assert list(files) == list(DROPS)
    landing = tmp_path / "landing"
    jsonl = (landing / "day2-jsonl" / "articles.jsonl").read_text().splitlines()
    csv_rows = pd.read_csv(landing / "day3-csv" / "articles.csv", on_bad_lines="skip")
    parquet = pd.read_parquet(landing / "day4-parquet" / "articles.parquet")
    golden = (tmp_path / "golden.jsonl").read_text().splitlines()
    removed = (tmp_path / "golden-removed.jsonl").read_text().splitlines()
    articles = files["day1-txt"] + len(jsonl) - 3 + len(csv_rows) - 1 + len(parquet) - 1
    assert articles + len(golden) + len(removed) == 2225
    assert 100 < len(golden) + len(removed) < 120
    # golden rows that repeat a landing article (exactly or nearly) were taken out
    assert 5 < len(removed) < 30
    landed = set(jsonl) | set(csv_rows["text"]) | set(parquet["text"].dropna())
    assert not any(json.loads(g)["text"] in landed for g in golden)
    assert PLANTED_JUNK == 6
    # the corpus's one non-UTF-8 file keeps its original bytes in the .txt drop
    raw = (landing / "day1-txt" / "sports" / "199.txt").read_bytes()
    assert b"\xa3" in raw
    assert json.loads(jsonl[0])["id"].startswith("bbc-")
