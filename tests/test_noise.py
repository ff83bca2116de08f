"""Label-noise generators: each records exactly what it changed, at about the asked rate."""

from __future__ import annotations

import pandas as pd
import pytest

from finegate.core.noise import add_noise, near_copy
from tests.factories import LABELS, topic_rows

CONFUSIONS = {"tech": "politics", "politics": "tech"}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return pd.DataFrame(topic_rows(1500, seed=3, prefix="n"))


def test_symmetric_flips_about_the_rate_to_other_labels(rows: pd.DataFrame) -> None:
    noisy = add_noise("symmetric", rows, 0.3, LABELS, seed=1)
    assert (noisy["true_label"] == rows["label"]).all() and len(noisy) == len(rows)
    assert noisy["is_noisy"].equals(noisy["label"] != noisy["true_label"])
    assert 0.25 < noisy["is_noisy"].mean() < 0.35
    flipped_to = noisy.loc[noisy["is_noisy"], "label"].value_counts(normalize=True)
    assert set(flipped_to.index) == set(LABELS) and flipped_to.min() > 0.25  # uniform-ish
    again = add_noise("symmetric", rows, 0.3, LABELS, seed=1)
    assert again["label"].equals(noisy["label"])  # reproducible from the seed


def test_asymmetric_confuses_only_the_given_pairs(rows: pd.DataFrame) -> None:
    noisy = add_noise("asymmetric", rows, 0.4, LABELS, seed=1, confusions=CONFUSIONS)
    wrong = noisy.loc[noisy["is_noisy"]]
    assert (wrong["label"] == wrong["true_label"].map(CONFUSIONS)).all()
    assert not noisy.loc[noisy["true_label"] == "sports", "is_noisy"].any()
    rate = noisy.loc[noisy["true_label"] == "tech", "is_noisy"].mean()
    assert 0.33 < rate < 0.47


def test_one_careless_annotator_makes_most_errors_and_leaves_votes(rows: pd.DataFrame) -> None:
    noisy = add_noise("annotator", rows, 0.5, LABELS, seed=1, annotators=3, overlap=0.3)
    by_annotator = noisy.groupby("assigned_annotator")["is_noisy"].mean()
    assert 0.4 < by_annotator["a0"] < 0.6 and by_annotator.drop("a0").max() < 0.06
    voted = noisy["annotator_labels"].notna()
    assert 0.25 < voted.mean() < 0.35
    ballots = noisy.loc[voted]
    assert all(len(v) == 3 and list(i) == ["a0", "a1", "a2"]
               for v, i in zip(ballots["annotator_labels"], ballots["annotator_ids"],
                               strict=True))
    # a voted row's delivered label is its assigned annotator's own vote
    assert all(v[int(a[1:])] == lab for v, a, lab in zip(
        ballots["annotator_labels"], ballots["assigned_annotator"], ballots["label"],
        strict=True))


def test_keyword_rule_mislabels_only_rows_with_the_word() -> None:
    rows = pd.DataFrame({"id": ["1", "2", "3", "4"], "label": ["sports", "tech", "sports",
                                                               "politics"],
                         "text": ["The team won the cup", "A new phone chip",
                                  "Team data on the league", "Data law passed"]})
    noisy = add_noise("keyword", rows, 1.0, LABELS, seed=0, keywords={"data": "tech"})
    assert noisy["label"].tolist() == ["sports", "tech", "tech", "tech"]
    assert noisy["is_noisy"].tolist() == [False, False, True, True]
    assert not add_noise("keyword", rows, 0.0, LABELS, keywords={"data": "tech"})[
        "is_noisy"].any()


def test_conflicting_duplicates_add_near_copies_with_the_confusable_label(
        rows: pd.DataFrame) -> None:
    noisy = add_noise("conflicting_duplicates", rows, 0.3, LABELS, seed=1,
                      confusions=CONFUSIONS)
    copies = noisy.loc[noisy["id"].str.endswith("~dup")]
    assert copies["is_noisy"].all() and not noisy.loc[noisy.index < len(rows), "is_noisy"].any()
    assert (copies["label"] == copies["true_label"].map(CONFUSIONS)).all()
    assert 0.2 * 1000 < len(copies) < 0.4 * 1000  # 30% of the 1,000 tech/politics rows
    originals = rows.set_index("id")["text"]
    for copy_id, text in zip(copies["id"], copies["text"], strict=True):
        source = originals[copy_id.removesuffix("~dup")].split()
        assert set(text.split()) <= set(source) and len(text.split()) >= 0.7 * len(source)


def test_bad_arguments_are_clear_errors(rows: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown noise kind"):
        add_noise("gaussian", rows, 0.1, LABELS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        add_noise("symmetric", rows, 1.5, LABELS)


def test_near_copy_keeps_at_least_one_word() -> None:
    import numpy as np

    assert near_copy("word", np.random.default_rng(0), drop=1.0) == "word"
