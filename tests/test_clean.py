from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegate.lake import Lake
from tasks.clean import clean_drop, label_lookup, normalise_text, text_hash
from tasks.ingest import ingest_drop
from tests.conftest import LABELS


def test_normalise_text_strips_html_and_normalises() -> None:
    raw = "<p>Caf\u00e9&nbsp;&amp;\tbar</p><script>alert(1)</script>\n\n<b>ﬁne</b>  "
    assert normalise_text(raw) == "Café & bar fine"


def test_text_hash_ignores_case_and_whitespace() -> None:
    assert text_hash("Hello   World") == text_hash("hello world")
    assert text_hash("hello world") != text_hash("hello there")


def test_label_variants_map_to_canonical_labels() -> None:
    lookup = label_lookup(["sports", "tech"], {"sport": "sports", "IT": "tech"})
    from tasks.clean import label_key

    assert lookup[label_key(" SPORTS ")] == "sports"
    assert lookup[label_key("Sport")] == "sports"
    assert lookup[label_key("it")] == "tech"


def test_alias_to_unknown_label_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not in the label set"):
        label_lookup(["sports"], {"football": "soccer"})


def test_unknown_labels_are_quarantined(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    ingested = ingest_drop(dirty_landing, "day2", lake)
    result = clean_drop("day2", lake, LABELS, {})
    assert result.rows_in == ingested.rows_bronze
    silver = pq.read_table(result.silver_path).to_pandas()
    quarantine = pq.read_table(result.quarantine_path).to_pandas()
    assert result.rows_silver + result.rows_quarantined == result.rows_in
    assert quarantine["reason"].tolist() == [
        "unknown label 'x'; not in the label set or label_aliases"]
    assert set(silver["label"]) == set(LABELS)
    assert not silver["text"].str.contains("<p>").any()
    assert silver.set_index("id").at["j-0", "label"] == "sports"
