from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core.config import DedupConfig, LabelsConfig, SplitConfig
from finegate.core.lake import Lake
from finegate.core.text import consensus
from finegate.tasks.clean import clean_drop, resolve_label
from finegate.tasks.dedup import dedup_drops
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.labels import annotation_agreement, choose_actions, label_issues, review_labels
from finegate.tasks.quality import build_scorecard
from finegate.tasks.snapshot import build_curated_snapshot
from tests.factories import LABEL_SET, LABELS, topic_rows


def noisy_rows(n: int, flips: int) -> tuple[list[str], list[str], list[int]]:
    rows = topic_rows(n, seed=11, prefix="n")
    labels = [r["label"] for r in rows]
    flipped = list(range(0, flips * 7, 7))
    for i in flipped:
        labels[i] = LABELS[(LABELS.index(labels[i]) + 1) % 3]
    return [r["text"] for r in rows], labels, flipped


def test_flipped_labels_are_found_with_suggested_fix() -> None:
    texts, labels, flipped = noisy_rows(150, flips=10)
    issues, note = label_issues(texts, labels, LABELS, folds=5)
    found = set(np.flatnonzero(issues["is_label_issue"]))
    assert "5-fold" in note
    assert len(found & set(flipped)) >= 8  # recall >= 0.8
    assert len(found - set(flipped)) <= 3
    clean_truth = [r["label"] for r in topic_rows(150, seed=11, prefix="n")]
    suggested = issues.loc[flipped, "suggested_label"].tolist()
    assert sum(s == clean_truth[i] for s, i in zip(suggested, flipped, strict=True)) >= 8
    assert issues.loc[flipped, "label_quality"].mean() < issues["label_quality"].mean()


@pytest.mark.parametrize(("labels", "reason"), [
    (["tech"] * 40, "needs >= 20 rows and >= 2 labels"),
    ([], "needs >= 20 rows"),
    (["tech"] * 39 + ["sports"], "single row"),
])
def test_degenerate_inputs_skip_detection(labels: list[str], reason: str) -> None:
    issues, note = label_issues(["some text here"] * len(labels), labels, LABELS, folds=5)
    assert reason in note
    assert not issues["is_label_issue"].any()
    assert len(issues) == len(labels)


def test_policies() -> None:
    issues = pd.DataFrame({"is_label_issue": [False, True, True],
                           "suggested_label": ["tech", "sports", "politics"],
                           "suggested_confidence": [0.9, 0.95, 0.5]})
    given = ["tech", "tech", "tech"]
    assert choose_actions(issues, given, LabelsConfig(policy="drop")) == ["keep", "drop", "drop"]
    assert choose_actions(issues, given, LabelsConfig(policy="flag")) == ["keep", "flag", "flag"]
    relabel = LabelsConfig(policy="relabel", relabel_confidence=0.8)
    assert choose_actions(issues, given, relabel) == ["keep", "relabel", "flag"]


def test_consensus_and_label_resolution() -> None:
    lookup = {"tech": "tech", "sports": "sports", "sport": "sports"}
    assert consensus(["b", "a", "b"]) == "b"
    assert consensus(["b", "a"]) == "a"  # ties: alphabetical, deterministic
    assert resolve_label("tech", ["Sport", "sports", "tech"], lookup) == (
        "sports", ["sports", "sports", "tech"], ["label_from_consensus"])
    assert resolve_label(None, ["tech"], lookup) == ("tech", ["tech"], [])
    assert resolve_label("tech", None, lookup) == ("tech", None, [])


def test_annotator_agreement_statistics() -> None:
    votes = pd.Series([["a", "a", "a"], ["a", "b", "a"], ["b", "b", "b"], None])
    ids = pd.Series([["x", "y", "z"], ["x", "y", "z"], ["x", "y", "z"], None])
    per_row, summary = annotation_agreement(votes, ids)
    assert per_row == [1.0, pytest.approx(2 / 3), 1.0, None]
    assert summary.rows_with_annotators == 3
    assert summary.unanimous_share == pytest.approx(2 / 3)
    assert 0 < summary.krippendorff_alpha < 1
    assert summary.per_annotator == {"x": 1.0, "y": pytest.approx(2 / 3), "z": 1.0}


def test_one_annotator_only_has_no_chance_corrected_agreement() -> None:
    per_row, summary = annotation_agreement(pd.Series([["a"], ["b"]]), pd.Series([None, None]))
    assert per_row == [1.0, 1.0]
    assert summary.krippendorff_alpha is None
    assert summary.per_annotator == {}


def test_review_drops_noisy_rows_to_quarantine(tmp_path: Path) -> None:
    texts, labels, flipped = noisy_rows(150, flips=10)
    drop = tmp_path / "landing" / "day1"
    drop.mkdir(parents=True)
    pd.DataFrame({"id": [f"n-{i}" for i in range(150)], "text": texts, "label": labels,
                  "annotator_labels": [{"ann1": lab, "ann2": lab} if i < 30 else None
                                       for i, lab in enumerate(labels)]}).to_json(
        drop / "rows.jsonl", orient="records", lines=True)
    lake = Lake.at(tmp_path / "lake")
    ingest_drop(tmp_path / "landing", "day1", lake)
    clean_drop("day1", lake, LABEL_SET)
    dedup = dedup_drops(lake, ["day1"], DedupConfig())
    result = review_labels(lake, ["day1"], dedup, LABELS, LabelsConfig(policy="drop"))
    quarantined = pq.read_table(lake.quarantine("day1", "labels")).to_pandas()
    assert result.actions["drop"] == result.issues == len(quarantined)
    assert quarantined["reason"].str.startswith("label issue: labelled").all()
    assert result.rows == 150 - dedup.duplicates
    assert result.annotation.rows_with_annotators == 30
    assert result.annotation.unanimous_share == 1.0
    assert result.annotation.per_annotator == {"ann1": 1.0, "ann2": 1.0}
    assert result.annotation.krippendorff_alpha == pytest.approx(1.0)


def test_texts_without_a_shared_word_skip_detection_instead_of_crashing() -> None:
    texts = [f"w{i}" for i in range(30)]  # no word occurs twice: TF-IDF keeps no term
    issues, note = label_issues(texts, ["tech", "sports"] * 15, LABELS, folds=5)
    assert note.startswith("skipped: the noise model could not be fitted")
    assert len(issues) == 30 and not issues["is_label_issue"].any()


@pytest.mark.parametrize("policy", ["drop", "relabel"])
def test_cleaning_policies_end_in_a_snapshot_whose_rows_add_up(policy: str,
                                                               tmp_path: Path) -> None:
    texts, labels, flipped = noisy_rows(150, flips=10)
    drop = tmp_path / "landing" / "day1"
    drop.mkdir(parents=True)
    pd.DataFrame({"id": [f"n-{i}" for i in range(150)], "text": texts, "label": labels}).to_json(
        drop / "rows.jsonl", orient="records", lines=True)
    lake = Lake.at(tmp_path / "lake")
    read = ingest_drop(tmp_path / "landing", "day1", lake).rows_read
    clean_drop("day1", lake, LABEL_SET)
    dedup = dedup_drops(lake, ["day1"], DedupConfig())
    review = review_labels(lake, ["day1"], dedup, LABELS,
                           LabelsConfig(policy=policy, relabel_confidence=0.5))
    snapshot = build_curated_snapshot(lake, ["day1"], dedup, review, SplitConfig())
    card = build_scorecard(read, snapshot, lake, LABELS, dedup, review)
    assert card["accounting"]["holds"], card["accounting"]
    data = pq.read_table(snapshot.data_path).to_pandas()
    truth = {f"n-{i}": r["label"] for i, r in enumerate(topic_rows(150, seed=11, prefix="n"))}
    if policy == "drop":
        assert review.actions["drop"] >= 8
        assert snapshot.rows == read - dedup.duplicates - review.actions["drop"]
        assert sum(data["label"] != data["id"].map(truth)) <= 2  # flipped labels are gone
    else:
        relabelled = data.loc[data["flags"].map(lambda f: any(
            x.startswith("relabelled_from:") for x in f))]
        assert len(relabelled) == review.actions["relabel"] >= 8
        assert snapshot.rows == read - dedup.duplicates  # nothing dropped, labels fixed
        assert (relabelled["label"] == relabelled["id"].map(truth)).mean() >= 0.9
