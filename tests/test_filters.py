import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegate.core.config import (
    DedupConfig,
    FiltersConfig,
    LabelsConfig,
    LanguageRule,
    SplitConfig,
    WordCountRule,
)
from finegate.core.filters import RULES, document, filter_name, judge
from finegate.core.lake import Lake
from finegate.core.text import normalise_text
from finegate.tasks.clean import clean_drop
from finegate.tasks.dedup import dedup_drops
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.labels import review_labels
from finegate.tasks.quality import write_scorecard
from finegate.tasks.snapshot import build_curated_snapshot
from tests.factories import LABEL_SET, LABELS

ENGLISH = [
    "Shares in the carmaker rose by 4% on Tuesday after it reported stronger than expected "
    "sales in Europe and Asia.\n\nThe company said demand for its smaller models had held up "
    "despite higher interest rates, and it expects profits to grow again next year. Analysts "
    "had warned that a price war with rival firms could hurt margins, but the chief executive "
    "told reporters the firm would not cut prices to win market share.",
    "The government has announced plans to build 200 new schools over the next five years, "
    "with most of them in towns where the population has grown fastest.\n\nThe education "
    "secretary said the money would come from the existing budget and that no other projects "
    "would be delayed. Teachers' unions welcomed the plan but said more staff would be needed "
    "to run the new buildings, and asked ministers to publish the details before the summer.",
    "The striker scored twice in the second half as the home side came from behind to win the "
    "cup tie on Saturday evening.\n\nThe manager praised his young team for their patience "
    "after a difficult first half in which they rarely threatened the visiting goalkeeper. "
    "The win lifts the club into the next round, where they will face one of the league "
    "leaders in front of a sold-out crowd next month.",
]
NON_ENGLISH = {
    "de": "Die Regierung hat am Dienstag neue Pläne für den Bau von Schulen vorgestellt. Die "
          "meisten Gebäude sollen in Städten entstehen, in denen die Bevölkerung in den letzten "
          "Jahren besonders stark gewachsen ist.",
    "fr": "Le gouvernement a présenté mardi de nouveaux projets pour la construction d'écoles. "
          "La plupart des bâtiments seront construits dans les villes où la population a le "
          "plus augmenté ces dernières années.",
    "es": "El gobierno presentó el martes nuevos planes para construir escuelas. La mayoría de "
          "los edificios se levantarán en las ciudades donde la población ha crecido más en "
          "los últimos años.",
    "it": "Il governo ha presentato martedì nuovi piani per la costruzione di scuole. La maggior "
          "parte degli edifici sorgerà nelle città in cui la popolazione è cresciuta di più "
          "negli ultimi anni.",
    "nl": "De regering heeft dinsdag nieuwe plannen gepresenteerd voor de bouw van scholen. De "
          "meeste gebouwen komen in steden waar de bevolking de afgelopen jaren het sterkst is "
          "gegroeid.",
}
# One text per rule that must fail it (and, per the order of the rules, no earlier rule).
FAILING = {
    "word_count": "Click here",
    "mean_word_length": "a b c d e f g h i j k l m n o p",
    "alpha_share": "| 2021 | 45.3 | 12.1 | 88 |\n| 2022 | 47.9 | 13.4 | 91 |\n"
                   "| 2023 | 51.0 | 14.8 | 95 |",
    "symbol_ratio": "Great deals ★ today ★ shoes ★ hats ★ socks ★ bags ★ coats ★ scarves",
    "duplicate_lines": "Subscribe to our newsletter\nRead more stories\nSubscribe to our "
                       "newsletter\nSubscribe to our newsletter\nSubscribe to our newsletter",
    "top_ngrams": " ".join(f"free money offer number {i} now" for i in range(10)),
    "duplicate_ngrams": " ".join([
        "the council met on monday to discuss the new budget for roads parks libraries and "
        "schools in the north of the county where residents asked for more buses"] * 2),
    "ellipsis_lines": "Top ten ways to save money on your weekly shopping bill...\n"
                      "You will not believe what happened to number seven on the list...\n"
                      "Read the full story and many others like it on our website.\n"
                      "More stories like this one from our team of writers...",
    "bullet_lines": "• Home\n• News\n• Sport\n• Weather\n• Contact us",
    "language": NON_ENGLISH["de"],
}


def doc_of(raw: str):
    """The document the clean stage builds from a raw text."""
    return document(normalise_text(raw), [normalise_text(line) for line in raw.splitlines()])


@pytest.fixture(scope="session")
def defaults() -> FiltersConfig:
    """The default filters, with lingua's detector built once for the session."""
    from finegate.core.filters import language_detector

    language_detector()
    return FiltersConfig()


@pytest.mark.parametrize("text", ENGLISH, ids=["business", "politics", "sport"])
def test_clean_english_news_passes_every_filter(text: str, defaults: FiltersConfig) -> None:
    doc = doc_of(text)
    assert {name: check(doc, getattr(defaults, name)) for name, check in RULES.items()} == {
        name: None for name in RULES}


@pytest.mark.parametrize("name", list(FAILING))
def test_each_filter_drops_its_junk_with_its_reason(name: str, defaults: FiltersConfig) -> None:
    verdict = judge(doc_of(FAILING[name]), defaults)
    assert verdict.reason is not None and verdict.reason.startswith(f"filter:{name}: ")
    assert filter_name(verdict.reason) == name
    assert any(ch.isdigit() for ch in verdict.reason)  # the measured value is in the reason


@pytest.mark.parametrize("code", list(NON_ENGLISH))
def test_non_english_texts_fail_the_language_filter(code: str, defaults: FiltersConfig) -> None:
    reason = judge(doc_of(NON_ENGLISH[code]), defaults).reason
    assert reason is not None and reason.startswith(f"filter:language: language {code};")


def test_configured_languages_pass_and_short_texts_are_not_judged(
        defaults: FiltersConfig) -> None:
    german_ok = defaults.model_copy(update={"language": LanguageRule(languages=["en", "de"])})
    assert judge(doc_of(NON_ENGLISH["de"]), german_ok).reason is None
    assert judge(doc_of("Guten Morgen, wie geht es dir heute?"), defaults).reason is None
    # a wrong code is refused when the config loads, not by a worker in the middle of a night
    with pytest.raises(ValueError, match=r"unknown ISO 639-1 language code\(s\) \['xx'\]"):
        LanguageRule(languages=["en", "xx"])
    with pytest.raises(ValueError, match="at least one language"):
        LanguageRule(languages=[])
    assert LanguageRule(languages=["EN"]).languages == ["en"]


def test_word_count_upper_bound_and_disabled_filters() -> None:
    config = FiltersConfig(word_count=WordCountRule(max_words=10))
    assert judge(doc_of(ENGLISH[0]), config).reason.startswith("filter:word_count: 73 words, above")
    assert judge(doc_of(FAILING["word_count"]), FiltersConfig(enabled=False)).reason is None
    off = FiltersConfig(word_count=WordCountRule(enabled=False))
    assert judge(doc_of(FAILING["word_count"]), off).reason is None


def test_flag_mode_keeps_the_row_and_records_every_flag(defaults: FiltersConfig) -> None:
    flag_all = FiltersConfig(**{name: getattr(defaults, name).model_copy(
        update={"action": "flag"}) for name in RULES})
    flag_all.word_count.min_words = 10
    verdict = judge(doc_of("• Buy\n• Buy\n• Buy"), flag_all)
    assert verdict.reason is None
    assert set(verdict.flags) == {"filter:word_count", "filter:duplicate_lines",
                                  "filter:bullet_lines"}


def test_the_clean_stage_quarantines_filtered_rows_and_counts_add_up(
        tmp_path: Path, defaults: FiltersConfig) -> None:
    landing = tmp_path / "landing"
    (landing / "d").mkdir(parents=True)
    rows = [{"id": f"good-{i}", "text": t, "label": "politics"} for i, t in enumerate(ENGLISH)]
    rows += [{"id": f"junk-{name}", "text": t, "label": "tech"} for name, t in FAILING.items()]
    rows.append({"id": "bad-label", "text": NON_ENGLISH["fr"], "label": "weather"})
    (landing / "d" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lake = Lake.at(tmp_path / "lake")
    ingest_drop(landing, "d", lake)
    result = clean_drop("d", lake, LABEL_SET, defaults)

    quarantine = pq.read_table(result.quarantine_path).to_pandas().set_index("id")
    silver = pq.read_table(result.silver_path).to_pandas()
    assert result.rows_in == len(rows) == result.rows_silver + result.rows_quarantined
    assert sorted(silver["id"]) == ["good-0", "good-1", "good-2"]
    assert {i: filter_name(r) for i, r in quarantine["reason"].items()} == {
        **{f"junk-{name}": name for name in FAILING}, "bad-label": None}
    assert quarantine.at["bad-label", "reason"].startswith("unknown label")  # checked first
    assert (quarantine["raw"].str.len() > 0).all()


def test_the_clean_stage_keeps_flagged_rows(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "d").mkdir(parents=True)
    rows = [{"id": "short", "text": "Goal!", "label": "sports"},
            {"id": "long", "text": ENGLISH[2], "label": "sports"}]
    (landing / "d" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lake = Lake.at(tmp_path / "lake")
    ingest_drop(landing, "d", lake)
    flag = FiltersConfig(word_count=WordCountRule(action="flag"),
                         language=LanguageRule(enabled=False))
    result = clean_drop("d", lake, LABEL_SET, flag)
    silver = pq.read_table(result.silver_path).to_pandas().set_index("id")
    assert result.rows_quarantined == 0 and result.rows_silver == 2
    assert list(silver.at["short", "flags"]) == ["filter:word_count"]
    assert list(silver.at["long", "flags"]) == []


def test_the_scorecard_counts_rows_per_filter(tmp_path: Path, defaults: FiltersConfig) -> None:
    landing = tmp_path / "landing"
    (landing / "d").mkdir(parents=True)
    rows = [{"id": f"good-{i}", "text": t, "label": LABELS[i]} for i, t in enumerate(ENGLISH)]
    rows += [{"id": f"junk-{name}", "text": t, "label": "tech"} for name, t in FAILING.items()]
    (landing / "d" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lake = Lake.at(tmp_path / "lake")
    read = ingest_drop(landing, "d", lake).rows_read
    flag_short = defaults.model_copy(update={"word_count": WordCountRule(action="flag")})
    clean_drop("d", lake, LABEL_SET, flag_short)
    dedup = dedup_drops(lake, ["d"], DedupConfig())
    review = review_labels(lake, ["d"], dedup, LABELS, LabelsConfig(noise_detection=False))
    snapshot = build_curated_snapshot(lake, ["d"], dedup, review, SplitConfig())
    card = json.loads(Path(write_scorecard(read, snapshot, lake, LABELS, dedup,
                                           review).scorecard_path).read_text())
    assert card["accounting"]["holds"] and card["accounting"]["quarantined"] == len(FAILING) - 1
    assert card["filters"] == {name: {"dropped": int(name != "word_count"),
                                      "flagged": int(name == "word_count")} for name in RULES}
    assert card["filtered_ratio"] == pytest.approx((len(FAILING) - 1) / len(rows))
