import codecs
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core.lake import Lake
from finegate.core.landing import list_drops
from finegate.core.results import IngestResult
from finegate.tasks.ingest import (
    count_csv_records,
    count_rows,
    decode_bytes,
    ingest_drop,
    open_landing_file,
)
from tests.factories import topic_rows


def test_list_drops_in_name_order(dirty_landing: Path) -> None:
    assert list_drops(dirty_landing) == ["day1", "day2"]


def test_cp1252_is_decoded_and_flagged() -> None:
    text, flags = decode_bytes("caf\xe9 \xa3".encode("cp1252"))
    assert text == "café £"
    assert flags == ["decoded_cp1252"]
    assert decode_bytes("\ufeffplain".encode()) == ("plain", [])


def test_malformed_rows_go_to_quarantine_with_reason(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    result = ingest_drop(dirty_landing, "day2", lake, txt_files_per_partition=4)
    bronze = pq.read_table(result.bronze_path).to_pandas()
    quarantine = pq.read_table(result.quarantine_path).to_pandas()
    assert result.rows_read == 97 == len(bronze) + len(quarantine)
    reasons = sorted(quarantine["reason"])
    assert reasons[0] == "CSV row has 4 fields, header has 3"
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert reasons.count("missing text") == 2
    assert "missing label" in reasons
    assert set(quarantine["stage"]) == {"ingest"}
    bad_json = quarantine.loc[quarantine["reason"].str.startswith("invalid JSON")].iloc[0]
    assert bad_json["raw"] == '{"id": "bad-json", "text": "cut off'
    assert bad_json["position"] == 31
    # a quarantined row says where it came from: drop, file, line, and the row as written
    bad_csv = quarantine.loc[quarantine["reason"].str.startswith("CSV row has")].iloc[0]
    assert bad_csv["raw"] == "c-bad,one field too many,tech,extra"
    assert bad_csv["drop"] == "day2" and bad_csv["source"].endswith("/day2/rows.csv")
    assert bad_csv["position"] == 32  # header + 30 rows, then the bad one
    assert {"j-0", "c-0", "p-0"} <= set(bronze["id"])


def test_txt_folders_label_rows_and_flag_encoding(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    result = ingest_drop(dirty_landing, "day1", lake, txt_files_per_partition=4)
    bronze = pq.read_table(result.bronze_path).to_pandas()
    assert len(bronze) == 31
    assert set(bronze["label"]) == {"sports", "Tech", "politics"}
    cp1252 = bronze.loc[bronze["source"].str.endswith("cp1252.txt")].iloc[0]
    assert "striker’s" in cp1252["text"]
    assert list(cp1252["flags"]) == ["decoded_cp1252"]
    quarantine = pq.read_table(result.quarantine_path).to_pandas()
    assert quarantine["reason"].str.startswith("unsupported file type .xml").tolist() == [True]


def test_ids_are_stable_across_runs(dirty_landing: Path, tmp_path: Path) -> None:
    first = ingest_drop(dirty_landing, "day1", Lake.at(tmp_path / "a"))
    second = ingest_drop(dirty_landing, "day1", Lake.at(tmp_path / "b"), txt_files_per_partition=3)
    ids = [sorted(pq.read_table(r.bronze_path).to_pandas()["id"]) for r in (first, second)]
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == len(ids[0])


def test_empty_drop_writes_empty_outputs(tmp_path: Path) -> None:
    (tmp_path / "landing" / "empty").mkdir(parents=True)
    result = ingest_drop(tmp_path / "landing", "empty", Lake.at(tmp_path / "lake"))
    assert (result.rows_read, result.rows_bronze, result.rows_quarantined) == (0, 0, 0)
    assert pq.read_table(result.bronze_path).num_rows == 0


def write_drop(landing: Path, name: str, data: bytes) -> None:
    (landing / "d").mkdir(parents=True, exist_ok=True)
    (landing / "d" / name).write_bytes(data)


def ingested(landing: Path, lake: Lake) -> tuple[IngestResult, pd.DataFrame, pd.DataFrame]:
    result = ingest_drop(landing, "d", lake)
    return (result, pq.read_table(result.bronze_path).to_pandas(),
            pq.read_table(result.quarantine_path).to_pandas())


JSONL = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
    {"id": "u1", "text": "Ünïcode stories about the chip market", "label": "tech"},
    {"id": "u2", "text": "The striker’s goal won the cup", "label": "sports"}])


@pytest.mark.parametrize(("bom", "codec", "flag"), [
    (codecs.BOM_UTF16_LE, "utf-16-le", "decoded_utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "decoded_utf-16"),
    (codecs.BOM_UTF32_LE, "utf-32-le", "decoded_utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "decoded_utf-32"),
])
def test_utf16_and_utf32_files_with_a_bom_are_decoded(tmp_path: Path, bom: bytes, codec: str,
                                                      flag: str) -> None:
    assert decode_bytes(bom + JSONL.encode(codec)) == (JSONL, [flag])
    write_drop(tmp_path / "landing", "rows.jsonl", bom + JSONL.encode(codec))
    result, bronze, quarantine = ingested(tmp_path / "landing", Lake.at(tmp_path / "lake"))
    assert (result.rows_read, len(bronze), len(quarantine)) == (2, 2, 0)
    assert bronze["text"].tolist()[1] == "The striker’s goal won the cup"
    assert all(list(flags) == [flag] for flags in bronze["flags"])


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_without_a_bom_is_quarantined_once_naming_the_encoding(tmp_path: Path,
                                                                     codec: str) -> None:
    write_drop(tmp_path / "landing", "rows.jsonl", (JSONL * 3).encode(codec))
    result, bronze, quarantine = ingested(tmp_path / "landing", Lake.at(tmp_path / "lake"))
    assert (result.rows_read, len(bronze), len(quarantine)) == (1, 0, 1)
    [reason] = quarantine["reason"]
    assert reason.startswith(f"file looks like {codec.upper()} without a byte-order mark")


@pytest.mark.parametrize(("delimiter", "flag"), [(";", "csv_delimiter:;"),
                                                 ("\t", "csv_delimiter:tab"),
                                                 ("|", "csv_delimiter:|")])
def test_a_csv_with_another_delimiter_is_read_with_it(tmp_path: Path, delimiter: str,
                                                      flag: str) -> None:
    rows = topic_rows(12, seed=4, prefix="s")
    rows[0]["text"] = "A story, with commas; and a semicolon, quoted"
    csv_text = pd.DataFrame(rows).to_csv(index=False, sep=delimiter)
    write_drop(tmp_path / "landing", "rows.csv", csv_text.encode())
    result, bronze, quarantine = ingested(tmp_path / "landing", Lake.at(tmp_path / "lake"))
    assert (result.rows_read, len(bronze), len(quarantine)) == (12, 12, 0)
    assert bronze.set_index("id").at["s-0", "text"] == rows[0]["text"]
    assert all(flag in flags for flags in bronze["flags"])


def test_a_csv_without_the_required_columns_is_quarantined_once(tmp_path: Path) -> None:
    write_drop(tmp_path / "landing", "rows.csv", b"id,body,category\n1,some text,tech\n"
               b"2,more text,sports\n3,and more,tech\n")
    result, bronze, quarantine = ingested(tmp_path / "landing", Lake.at(tmp_path / "lake"))
    assert (result.rows_read, len(bronze), len(quarantine)) == (1, 0, 1)
    [reason] = quarantine["reason"]
    assert reason.startswith("CSV header ['id', 'body', 'category'] has no 'text' column")
    assert quarantine["raw"][0].startswith("id,body,category\n1,some text,tech")
    assert quarantine["drop"][0] == "d" and quarantine["source"][0].endswith("/d/rows.csv")


def test_rows_read_are_counted_from_the_files(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    files = sorted(p for p in (dirty_landing / "day2").iterdir())
    counted = {p.name: count_rows(open_landing_file(p, dirty_landing)) for p in files}
    assert counted == {"rows.csv": 31, "rows.jsonl": 35, "rows.parquet": 31}
    assert ingest_drop(dirty_landing, "day2", lake).rows_read == 97
    assert count_csv_records('id,text,label\n\n1,"a\nb",x\n\n2,c,y\n') == 2
    assert count_csv_records('id,text,label\n1,"never closed') == 1


def test_a_file_whose_bom_lies_is_quarantined_once(tmp_path: Path) -> None:
    write_drop(tmp_path / "landing", "rows.jsonl", codecs.BOM_UTF16_LE + b"\x00\xd8" * 9)
    result, bronze, quarantine = ingested(tmp_path / "landing", Lake.at(tmp_path / "lake"))
    assert (result.rows_read, len(bronze), len(quarantine)) == (1, 0, 1)
    assert quarantine["reason"][0].startswith("file starts with a UTF-16 byte-order mark but is "
                                              "not valid UTF-16")


def ls_vote(n: int, who: int | dict, label: str | None, when: str) -> dict:
    """An annotation as Label Studio's JSON export writes it (``completed_by`` a user id, or an
    object with the user's e-mail in older exports); ``label`` None: a skipped task."""
    result = [] if label is None else [{"from_name": "label", "to_name": "text",
                                        "type": "choices", "value": {"choices": [label]}}]
    return {"id": n, "completed_by": who, "result": result, "was_cancelled": label is None,
            "ground_truth": False, "created_at": when, "updated_at": when, "task": 1}


def ls_task(n: int, data: dict, annotations: list[dict]) -> dict:
    return {"id": n, "annotations": annotations, "drafts": [], "predictions": [], "data": data,
            "meta": {}, "total_annotations": len(annotations), "project": 1}


T1, T2 = "The striker scored twice in the cup final.", "Parliament votes on the new tax law."


def test_a_label_studio_export_in_the_landing_zone_is_read_as_named_votes(tmp_path: Path) -> None:
    from finegate.tasks.clean import clean_drop
    from tests.factories import LABEL_SET

    ann = {"id": 1, "email": "ann@x.org", "first_name": "", "last_name": ""}
    export = [
        ls_task(11, {"text": T1, "row_id": "r-1", "queue": "queue-x", "label": "tech"}, [
            ls_vote(1, ann, "tech", "2026-11-29T09:00:00Z"),
            ls_vote(2, ann, "sports", "2026-11-29T10:00:00Z"),  # her later answer wins
            ls_vote(3, 2, "sports", "2026-11-29T10:05:00Z")]),
        ls_task(12, {"text": T2}, [ls_vote(4, 2, "politics", "2026-11-29T11:00:00Z"),
                                   ls_vote(5, 3, "tech", "2026-11-29T11:30:00Z")]),
        ls_task(13, {"text": "Nobody answered this one.", "row_id": "r-3"},
                [ls_vote(6, 2, None, "2026-11-29T12:00:00Z")]),
        ls_task(14, {"body": "a task without data.text"}, [ls_vote(7, 2, "tech", "2026-11-29")]),
    ]
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    write_drop(landing, "project-1-at-2026-11-29.json", json.dumps(export).encode())
    result, bronze, quarantine = ingested(landing, lake)
    assert (result.rows_read, len(bronze), len(quarantine), result.miscounted) == (4, 2, 2, [])
    assert sorted(quarantine["reason"]) == [
        "Label Studio task 13 has no completed annotation with one choice (unanswered, "
        "skipped or empty)",
        "Label Studio task 14 has no text in data.text (the labelling config's Text tag "
        "reads $text)"]
    assert json.loads(quarantine.set_index("position").at[3, "raw"])["id"] == 13  # the task
    clean_drop("d", lake, LABEL_SET)
    silver = pq.read_table(lake.silver("d")).to_pandas().set_index("text")
    assert dict(zip(silver.at[T1, "annotator_ids"], silver.at[T1, "annotator_labels"],
                    strict=True)) == {"ann@x.org": "sports", "user-2": "sports"}
    assert silver.at[T1, "label"] == "sports"  # a review row has no label but its votes'
    assert list(silver.at[T1, "flags"]) == [
        "human_review", "review_of:r-1", "queue:queue-x", "annotated_at:2026-11-29T10:05:00Z"]
    assert dict(zip(silver.at[T2, "annotator_ids"], silver.at[T2, "annotator_labels"],
                    strict=True)) == {"user-2": "politics", "user-3": "tech"}
    assert list(silver.at[T2, "flags"]) == [  # not queued by finegate: the task's own id
        "human_review", "review_of:12", "queue:label-studio", "annotated_at:2026-11-29T11:30:00Z"]


@pytest.mark.parametrize(("content", "reason"), [
    (b'[{"id": 1, "data": {"text": "cut o',
     "invalid JSON at line 1, column 29 (Unterminated string"),
    (b'{"text": "one row", "label": "tech"}', "the .json file holds a JSON dict, not a Label "
     "Studio export: a Label Studio JSON export (Export > JSON) is a list of tasks"),
    (json.dumps([{"data": {"text": "a task"}}, {"text": "a plain row", "label": "tech"}]).encode(),
     "the .json file is not a Label Studio export: item 2 is an object with keys ['label', "
     "'text'], not a task with a 'data' object"),
    (json.dumps([{"data": {"text": "x"}, "annotations": {"id": 1}}]).encode(),
     "the .json file is not a Label Studio export: the 'annotations' of item 1 are an object"),
])
def test_a_json_file_that_is_not_a_label_studio_export_is_quarantined_whole(
        tmp_path: Path, content: bytes, reason: str) -> None:
    landing = tmp_path / "landing"
    write_drop(landing, "rows.jsonl", JSONL.encode())  # the rest of the drop is read
    write_drop(landing, "export.json", content)
    result, bronze, quarantine = ingested(landing, Lake.at(tmp_path / "lake"))
    assert (result.rows_read, len(bronze), len(quarantine), result.miscounted) == (3, 2, 1, [])
    assert quarantine["reason"][0].startswith(reason), quarantine["reason"][0]
    assert quarantine["source"][0].endswith("/d/export.json")
    assert quarantine["raw"][0] == content.decode()


def test_broken_annotations_in_an_export_are_one_quarantined_row_each(tmp_path: Path) -> None:
    vote = ls_vote(2, [1, 2], "tech", "2026-11-29")  # completed_by a list: still a vote
    export = [ls_task(1, {"text": T1}, ["not an annotation", {"result": "tech"},
                                        {"result": [{"type": "choices", "value": "tech"}]}]),
              ls_task(2, {"text": T2}, [vote])]
    write_drop(tmp_path / "landing", "export.json", json.dumps(export).encode())
    result, bronze, quarantine = ingested(tmp_path / "landing", Lake.at(tmp_path / "lake"))
    assert (result.rows_read, len(bronze), len(quarantine)) == (2, 1, 1)
    assert quarantine["reason"][0].startswith("Label Studio task 1 has no completed annotation")
    assert list(bronze["annotator_ids"][0]) == ["user-[1, 2]"]
