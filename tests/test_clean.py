import json
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


@pytest.mark.parametrize(("raw", "cleaned"), [
    ("zero\u200bwidth\u2063space", "zero width space"),  # invisible separators: a space
    ("Persian\u200cjoiner and emoji\u200djoiner", "Persianjoiner and emojijoiner"),  # ZWNJ, ZWJ
    ("\ufeffbyte order mark", "byte order mark"),  # BOM
    ("word\u2060joiner", "wordjoiner"),  # word joiner
    ("co\u00adoperate", "cooperate"),  # soft hyphen
    ("\u202aembed\u202b \u202cpop\u202d \u202eoverride", "embed pop override"),  # bidi 202A-E
    ("\u2066isolate\u2069 \u2067r\u2069 \u2068first strong\u2069", "isolate r first strong"),
], ids=["separators", "joiners", "bom", "word-joiner", "soft-hyphen", "bidi-embeddings",
        "bidi-isolates"])
def test_invisible_format_characters_are_stripped(raw: str, cleaned: str) -> None:
    assert normalise_text(raw) == cleaned


def test_zero_width_spaces_do_not_glue_words_or_hide_duplicates() -> None:
    assert normalise_text("market\u200brally") == "market rally"
    assert text_hash(normalise_text("market\u200brally")) == text_hash("Market  rally")
    from finegate.core.text import label_key

    assert label_key("spo\u200drts\u200b") == label_key("sports")


def test_a_text_of_only_invisible_characters_is_quarantined(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "d").mkdir(parents=True)
    invisible = "\u200b\u200c\u200d\ufeff\u2060\u202a\u202e\u2066\u2069\u00ad \u200b"
    rows = [{"id": "ghost", "text": invisible, "label": "tech"},
            {"id": "real", "text": "A real story about a chip and a phone.", "label": "tech"}]
    (landing / "d" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lake = Lake.at(tmp_path / "lake")
    ingest_drop(landing, "d", lake)
    result = clean_drop("d", lake, LABEL_SET)
    quarantine = pq.read_table(result.quarantine_path).to_pandas()
    assert quarantine[["id", "reason"]].values.tolist() == [["ghost", "empty text after cleaning"]]
    assert pq.read_table(result.silver_path).to_pandas()["id"].tolist() == ["real"]
