"""Bad input never crashes a run and never vanishes: curated, quarantined or in the dedup log."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finegate.core.config import DedupConfig, LabelsConfig, LabelSet, SplitConfig
from finegate.core.lake import Lake
from finegate.core.landing import inside, list_drops
from finegate.core.quarantine import quarantine_reasons
from finegate.core.text import normalise_text
from finegate.tasks.clean import clean_drop
from finegate.tasks.dedup import dedup_drops
from finegate.tasks.ingest import ingest_drop, parse_file
from finegate.tasks.labels import review_labels
from finegate.tasks.quality import build_scorecard
from finegate.tasks.snapshot import build_curated_snapshot
from tests.bad_input_corpus import write_bad_input_corpus

LABELS = ["tech", "sports"]
LABEL_SET = LabelSet(tuple(LABELS), {})


def run_stages(landing: Path, lake: Lake) -> dict:
    drops = list_drops(landing)
    rows_read = 0
    for drop in drops:
        rows_read += ingest_drop(landing, drop, lake).rows_read
        clean_drop(drop, lake, LABEL_SET)
    dedup = dedup_drops(lake, drops, DedupConfig())
    review = review_labels(lake, drops, dedup, LABELS, LabelsConfig(policy="flag"))
    snapshot = build_curated_snapshot(lake, drops, dedup, review, SplitConfig())
    return build_scorecard(rows_read, snapshot, lake, LABELS, dedup, review) | {
        "data_path": snapshot.data_path, "duplicates_path": snapshot.duplicates_path}


def test_bad_input_corpus_lands_where_it_should(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jsonl"
    outside.write_text(json.dumps({"text": "not for us to read", "label": "tech"}) + "\n")
    expected = write_bad_input_corpus(tmp_path / "landing", outside)
    lake = Lake.at(tmp_path / "lake")
    card = run_stages(tmp_path / "landing", lake)

    assert card["accounting"]["holds"], card["accounting"]
    reasons = quarantine_reasons(lake, list_drops(tmp_path / "landing")).tolist()
    for prefix, count in expected.items():
        assert sum(r.startswith(prefix) for r in reasons) == count, (prefix, reasons)
    assert len(reasons) == sum(expected.values())

    data = pq.read_table(card["data_path"]).to_pandas()
    logged = pq.read_table(card["duplicates_path"]).to_pandas()
    kept = set(data["id"]) | set(logged["id"])
    assert {"ok-100", "l1", "huge", "q1", "q3", "10", "11"} <= kept
    rows = data.set_index("id")
    assert "decoded_cp1252" in rows.at["l1", "flags"]
    assert "\x00" not in rows.at["q3", "text"] and "NUL" in rows.at["q3", "text"]
    assert rows.at["z2", "text"] == "Zero width spaces between the words of a story aboutchips"
    assert list(rows.loc[["w1", "w2"], "text"].str[:7]) == ["Ünïcode", "Another"]
    assert all("decoded_utf-16" in rows.at[i, "flags"] for i in ("w1", "w2"))
    assert "decoded_utf-32" in rows.at["w3", "flags"]
    assert rows.at["s2", "text"] == "Quoted; with a semicolon of its own"
    assert all("csv_delimiter:;" in rows.at[i, "flags"] for i in ("s1", "s2"))
    assert set(data["label"]) <= set(LABELS)
    assert "not for us to read" not in " ".join(data["text"])
    reused = logged.loc[logged["reason"].str.startswith("id reused"), "id"].tolist()
    assert reused == ["ok-3"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.text(max_size=80),
    st.builds(lambda t, lab: json.dumps({"text": t, "label": lab}),
              st.text(max_size=40), st.sampled_from(["tech", "Sports", "", "x", None])),
), max_size=20))
def test_jsonl_reader_never_crashes_or_loses_a_line(lines: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp)
        (landing / "d").mkdir()
        path = landing / "d" / "x.jsonl"
        path.write_text("\n".join(lines), encoding="utf-8")
        rows = parse_file(path, landing, "d")
        content = path.read_bytes().decode("utf-8").split("\n")
    if len(rows) == 1 and (rows[0]["reason"] or "").startswith("file looks like UTF-"):
        return  # NUL-heavy lines in a UTF-16 pattern: the file is quarantined whole
    assert len(rows) == sum(1 for line in content if line.removesuffix("\r").strip())
    for row in rows:
        assert row["reason"] or (row["text"] and row["text"].strip() and
                                 (row["label"] or row["annotator_labels"]))


def test_a_json_line_with_unicode_line_separators_is_one_row(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "x.jsonl"
    text = "para one\u2028para two\x85end and a long enough sports text"
    path.write_text(json.dumps({"text": text, "label": "sports"}, ensure_ascii=False) + "\r\n",
                    encoding="utf-8")
    [row] = parse_file(path, tmp_path, "d")
    assert not row["reason"] and row["text"] == text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]),
                                 max_size=30), min_size=1, max_size=4), max_size=15))
def test_csv_reader_never_crashes_or_loses_a_record(records: list[list[str]]) -> None:
    import csv
    import io
    import tempfile

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "text", "label"])
    writer.writerows(records)
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp)
        (landing / "d").mkdir()
        (landing / "d" / "x.csv").write_text(buffer.getvalue(), encoding="utf-8")
        rows = parse_file(landing / "d" / "x.csv", landing, "d")
    if len(rows) == 1 and (rows[0]["reason"] or "").startswith("file looks like UTF-"):
        return  # NUL-heavy records in a UTF-16 pattern: the file is quarantined whole
    assert len(rows) == len(records)  # every record read back: good, or with a reason
    assert all(r["reason"] or r["text"] for r in rows)


@given(st.text())
def test_normalised_text_has_no_control_characters_or_loose_whitespace(text: str) -> None:
    cleaned = normalise_text(text)
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned and "\x00" not in cleaned and "\n" not in cleaned
    assert not any(unicodedata.category(c) == "Cf" for c in cleaned)  # no invisible format


def test_a_drop_linked_to_a_folder_outside_the_landing_zone_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "rows.jsonl").write_text('{"text": "not for us to read at all", "label": "tech"}\n')
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "linked").symlink_to(secret, target_is_directory=True)
    [row] = parse_file(landing / "linked" / "rows.jsonl", landing, "linked")
    assert row["reason"].startswith("file resolves outside the landing zone")
    assert "not for us" not in row["raw"]
    assert not inside(landing / "linked" / ".." / ".." / "elsewhere" / "rows.jsonl", landing)
    assert inside(landing / "day1" / ".." / "day2" / "x.jsonl", landing)
