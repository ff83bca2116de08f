from pathlib import Path

import pyarrow.parquet as pq

from finegate.core.lake import Lake
from finegate.core.landing import list_drops
from finegate.tasks.ingest import decode_bytes, ingest_drop


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
