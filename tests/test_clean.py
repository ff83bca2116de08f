from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegate.core.config import LabelSet
from finegate.core.lake import Lake
from finegate.core.text import label_lookup, normalise_text, text_hash
from finegate.tasks.clean import clean_drop
from finegate.tasks.ingest import ingest_drop
from tests.factories import LABEL_SET, LABELS


def test_normalise_text_strips_html_and_normalises() -> None:
    raw = "<p>Caf\u00e9&nbsp;&amp;\tbar</p><script>alert(1)</script>\n\n<b>ﬁne</b>  "
    assert normalise_text(raw) == "Café & bar fine"


def test_text_hash_ignores_case_and_whitespace() -> None:
    assert text_hash("Hello   World") == text_hash("hello world")
    assert text_hash("hello world") != text_hash("hello there")


def test_label_variants_map_to_canonical_labels() -> None:
    lookup = label_lookup(LabelSet(("sports", "tech"), {"sport": "sports", "IT": "tech"}))
    from finegate.core.text import label_key

    assert lookup[label_key(" SPORTS ")] == "sports"
    assert lookup[label_key("Sport")] == "sports"
    assert lookup[label_key("it")] == "tech"


def test_alias_to_unknown_label_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not in the label set"):
        label_lookup(LabelSet(("sports",), {"football": "soccer"}))


def test_unknown_labels_are_quarantined(dirty_landing: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    ingested = ingest_drop(dirty_landing, "day2", lake)
    result = clean_drop("day2", lake, LABEL_SET)
    assert result.rows_in == ingested.rows_bronze
    silver = pq.read_table(result.silver_path).to_pandas()
    quarantine = pq.read_table(result.quarantine_path).to_pandas()
    assert result.rows_silver + result.rows_quarantined == result.rows_in
    assert quarantine["reason"].tolist() == [
        "unknown label 'x'; not in the label set or label_aliases"]
    assert set(silver["label"]) == set(LABELS)
    assert not silver["text"].str.contains("<p>").any()
    assert silver.set_index("id").at["j-0", "label"] == "sports"
