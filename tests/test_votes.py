"""Annotator votes: delimiters, votes outside the label set, named and anonymous annotators."""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core.config import AnnotatorsConfig
from finegate.core.lake import Lake
from finegate.tasks.clean import clean_drop, resolve_label
from finegate.tasks.ingest import VoteProblem, annotator_votes, ingest_drop, split_votes
from tests.factories import LABEL_SET

LOOKUP = {"tech": "tech", "sports": "sports", "sport": "sports", "politics": "politics"}


@pytest.mark.parametrize("text", ["tech|tech|sports", "tech;tech;sports", "tech,tech,sports",
                                  "tech/tech/sports", "tech | tech | sports"])
def test_common_delimiters_are_recognised(text: str) -> None:
    assert annotator_votes(text) == (["tech", "tech", "sports"], None)


def test_one_vote_without_delimiter_and_explicit_delimiter() -> None:
    assert split_votes("tech") == ["tech"]
    # a configured delimiter splits on it alone: "sci/tech" stays one label
    assert split_votes("sci/tech+tech", "+") == ["sci/tech", "tech"]


def test_mixed_delimiters_are_ambiguous() -> None:
    with pytest.raises(VoteProblem, match=r"mix the delimiters \| ;.*vote_delimiter"):
        split_votes("tech|sports;tech")


def test_named_and_anonymous_annotators() -> None:
    assert annotator_votes({"ann1": "tech", " ann2 ": "sports"}) == (
        ["tech", "sports"], ["ann1", "ann2"])
    assert annotator_votes('{"ann1": "tech", "ann2": "sports"}') == (
        ["tech", "sports"], ["ann1", "ann2"])
    assert annotator_votes(["tech", "sports"]) == (["tech", "sports"], None)
    assert annotator_votes('["tech", "sports"]') == (["tech", "sports"], None)
    assert annotator_votes("") == (None, None)
    with pytest.raises(VoteProblem, match="got int 3"):
        annotator_votes(3)


def test_vote_delimiter_setting_is_checked() -> None:
    assert AnnotatorsConfig(vote_delimiter=";").vote_delimiter == ";"
    with pytest.raises(ValueError, match="vote_delimiter"):
        AnnotatorsConfig(vote_delimiter="ab")


def test_a_vote_outside_the_label_set_is_an_error_naming_vote_and_annotator() -> None:
    label, votes, flags, reason = resolve_label(None, ["tech", "tehc"], LOOKUP, ["ann1", "ann2"])
    assert reason is not None and "'tehc' (by ann2)" in reason and "label set" in reason
    # anonymous annotators are named by position; an alias is a vote in the label set
    assert "'x' (by annotator #2)" in resolve_label("tech", ["sport", "x"], LOOKUP)[3]
    assert resolve_label(None, ["sport", "sports", "tech"], LOOKUP)[:2] == (
        "sports", ["sports", "sports", "tech"])
    # the old behaviour: one long unknown "vote" from an unrecognised delimiter
    assert "'tech+sports'" in resolve_label("tech", ["tech+sports"], LOOKUP)[3]


def test_votes_through_ingest_and_clean(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    (landing / "day1").mkdir(parents=True)
    pd.DataFrame({
        "text": ["goal match team", "chip phone data", "vote party law", "cup striker",
                 "cloud app", "tax mp", "robot chip"],
        "label": ["", "", "politics", "", "", "", "tech"],
        "annotator_labels": ["sports;sports;tech", "tech/tech", '{"a": "politics", "b": "tax"}',
                             "sports|tech;sports", '["tech", "tech"]', "politics,politics",
                             ""],
    }).to_csv(landing / "day1" / "votes.csv", index=False)
    ingested = ingest_drop(landing, "day1", lake)
    cleaned = clean_drop("day1", lake, LABEL_SET)
    assert ingested.rows_read == 7
    quarantine = pd.concat([pq.read_table(lake.quarantine("day1", stage)).to_pandas()
                            for stage in ("ingest", "clean")])
    reasons = sorted(quarantine["reason"])
    assert len(reasons) == 2 and ingested.rows_quarantined + cleaned.rows_quarantined == 2
    assert "'tax' (by b) not in the label set" in reasons[0]
    assert "mix the delimiters | ;" in reasons[1]
    silver = pq.read_table(lake.silver("day1")).to_pandas().set_index("text")
    assert silver.loc["goal match team", "label"] == "sports"
    assert list(silver.loc["chip phone data", "annotator_labels"]) == ["tech", "tech"]
    assert silver.loc["tax mp", "label"] == "politics"
    assert silver.loc["robot chip", "label"] == "tech"
    # voted rows without a review key (review_of, queue, annotated_at) are ordinary annotated
    # data, not a person's review of an earlier row: the label policy still applies to them
    assert not any("human_review" in list(flags) for flags in silver["flags"])


def test_configured_delimiter_keeps_a_slash_inside_labels(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    (landing / "day1").mkdir(parents=True)
    (landing / "day1" / "votes.jsonl").write_text(
        '{"text": "chip phone", "annotator_labels": "Tech/ + tech"}\n')
    ingest_drop(landing, "day1", lake, vote_delimiter="+")
    bronze = pq.read_table(lake.bronze("day1")).to_pandas()
    assert list(bronze.loc[0, "annotator_labels"]) == ["Tech/", "tech"]
