from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core.config import DedupConfig, LabelsConfig, SplitConfig
from finegate.core.lake import Lake
from finegate.core.results import DedupResult, LabelsResult
from finegate.core.schemas import CONFLICTS_SCHEMA, DUPLICATES_SCHEMA, write_parquet
from finegate.core.text import consensus
from finegate.tasks.clean import clean_drop, resolve_label
from finegate.tasks.dedup import dedup_drops
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.labels import (
    STATE_FILE,
    annotation_agreement,
    choose_actions,
    decisions_file,
    label_issues,
    review_labels,
)
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
        "sports", ["sports", "sports", "tech"], ["label_from_consensus"], None)
    assert resolve_label(None, ["tech"], lookup) == ("tech", ["tech"], [], None)
    assert resolve_label("tech", None, lookup) == ("tech", None, [], None)


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


# --- a night costs its drop: incremental review ---------------------------------------------


def land(landing: Path, lake: Lake, drop: str, rows: list[dict[str, str]]) -> None:
    """Write ``rows`` as one JSONL drop, then ingest and clean it."""
    folder = landing / drop
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_json(folder / "rows.jsonl", orient="records", lines=True)
    ingest_drop(landing, drop, lake)
    clean_drop(drop, lake, LABEL_SET)


def night(lake: Lake, drops: list[str], settings: LabelsConfig) -> LabelsResult:
    """Dedup the drops and review their labels, as the nightly flow does."""
    return review_labels(lake, drops, dedup_drops(lake, drops, DedupConfig()), LABELS, settings)


def flipped(rows: list[dict[str, str]], every: int = 7) -> list[dict[str, str]]:
    """``rows`` with every ``every``-th label moved to the next label (known noise)."""
    return [{**r, "label": LABELS[(LABELS.index(r["label"]) + 1) % 3]} if i % every == 0 else r
            for i, r in enumerate(rows)]


def decisions_of(lake: Lake, drop: str) -> pd.DataFrame:
    return pd.read_parquet(decisions_file(lake, drop)).sort_values(["source", "position"])


@pytest.fixture
def two_nights(tmp_path: Path) -> tuple[Lake, Path]:
    """A lake whose label review ran on night 1 (day1) and day2 has landed since."""
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    land(landing, lake, "day1", flipped(topic_rows(150, seed=11, prefix="a")))
    night(lake, ["day1"], LabelsConfig())
    land(landing, lake, "day2", flipped(topic_rows(60, seed=12, prefix="b")))
    return lake, landing


def test_a_night_reviews_only_its_new_drop(two_nights: tuple[Lake, Path]) -> None:
    lake, _ = two_nights
    before = decisions_file(lake, "day1").stat().st_mtime_ns
    result = night(lake, ["day1", "day2"], LabelsConfig())
    assert decisions_file(lake, "day1").stat().st_mtime_ns == before  # not rewritten
    assert result.noise_detection.startswith(
        "incremental: 60 new rows judged against all 150 earlier rows; tfidf+logreg")
    assert result.rows_scored == 60
    decisions = pq.read_table(lake.labels, columns=["drop", "is_label_issue"]).to_pandas()
    assert decisions["drop"].value_counts().to_dict() == {"day1": 150, "day2": 60}
    assert result.rows == 210 and result.issues == int(decisions["is_label_issue"].sum())
    again = night(lake, ["day1", "day2"], LabelsConfig())  # a rerun has nothing new to score
    assert again.rows_scored == 0 and again.noise_detection.startswith("no new rows")
    assert (again.rows, again.issues, again.actions) == (result.rows, result.issues,
                                                         result.actions)


def test_below_the_sample_cap_a_night_equals_a_full_review(
        two_nights: tuple[Lake, Path]) -> None:
    lake, _ = two_nights
    night(lake, ["day1", "day2"], LabelsConfig())
    incremental = decisions_of(lake, "day2")
    (lake.labels / STATE_FILE).unlink()  # forget the history: the next review is a full one
    full = night(lake, ["day1", "day2"], LabelsConfig())
    assert full.noise_detection.startswith("full review of 210 rows")
    pd.testing.assert_frame_equal(incremental.reset_index(drop=True),
                                  decisions_of(lake, "day2").reset_index(drop=True))
    assert incremental["is_label_issue"].sum() >= 5  # the comparison is not trivially empty


def test_few_new_rows_are_fitted_with_a_stratified_sample_of_the_history(
        two_nights: tuple[Lake, Path]) -> None:
    lake, _ = two_nights
    result = night(lake, ["day1", "day2"], LabelsConfig(joint_rows=30))
    assert result.noise_detection.startswith(
        "incremental: 60 new rows judged against a stratified sample of 30 of 150 earlier rows;"
        " tfidf+logreg, 5-fold")  # 60 rows are too few to be judged on their own
    assert len(decisions_of(lake, "day2")) == 60


def test_many_new_rows_are_judged_by_a_model_of_the_history(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    land(landing, lake, "day1", flipped(topic_rows(900, seed=11, prefix="a")))
    night(lake, ["day1"], LabelsConfig())
    land(landing, lake, "day2", flipped(topic_rows(1_200, seed=12, prefix="b")))
    result = night(lake, ["day1", "day2"], LabelsConfig(joint_rows=100, sample_rows=600))
    assert result.noise_detection.startswith(
        "incremental: 1,200 new rows judged against a stratified sample of 600 of 900 earlier "
        "rows; tfidf+logreg fitted on those rows, the new rows held out")
    found = decisions_of(lake, "day2")
    noisy = found["id"].isin({f"b-{i}" for i in range(0, 1_200, 7)})
    assert (found["is_label_issue"] & noisy).sum() >= 0.8 * noisy.sum()  # recall
    assert (found["is_label_issue"] & ~noisy).sum() <= 0.2 * found["is_label_issue"].sum()
    assert (found.loc[noisy, "action"] == "drop").mean() >= 0.8


def test_a_reingested_drop_is_reviewed_again(two_nights: tuple[Lake, Path]) -> None:
    lake, landing = two_nights
    night(lake, ["day1", "day2"], LabelsConfig())
    day2 = decisions_file(lake, "day2").stat().st_mtime_ns
    ingest_drop(landing, "day1", lake)  # re-ingested: new silver files
    clean_drop("day1", lake, LABEL_SET)
    result = night(lake, ["day1", "day2"], LabelsConfig())
    assert result.noise_detection.startswith("incremental: 150 new rows")
    assert decisions_file(lake, "day2").stat().st_mtime_ns == day2
    assert result.rows == 210


def removal_log(folder: Path, rows: pd.DataFrame) -> DedupResult:
    """A dedup result whose log removes ``rows`` (as an id reused in a later drop would)."""
    log = rows.assign(text_hash="", duplicate_of=rows["id"], cluster="test", reason="test")
    write_parquet(log, folder / "duplicates", DUPLICATES_SCHEMA, "part")
    write_parquet(pd.DataFrame(columns=CONFLICTS_SCHEMA.names), folder / "conflicts",
                  CONFLICTS_SCHEMA, "part")
    return DedupResult(str(folder / "duplicates"), str(folder / "conflicts"), rows_in=0,
                       exact_duplicates=len(rows), near_duplicates=0, conflicts=0)


def test_rows_dedup_removes_later_leave_the_decisions(two_nights: tuple[Lake, Path],
                                                      tmp_path: Path) -> None:
    lake, _ = two_nights
    night(lake, ["day1", "day2"], LabelsConfig(policy="drop"))
    day1 = decisions_of(lake, "day1")
    gone = pd.concat([day1.loc[day1["action"] == "drop"].head(1),
                      day1.loc[day1["action"] == "keep"].head(2)])
    result = review_labels(lake, ["day1", "day2"], removal_log(tmp_path / "d1", gone), LABELS,
                           LabelsConfig(policy="drop"))
    assert result.noise_detection.startswith("no new rows") and result.rows == 207
    keys = set(zip(gone["source"], gone["position"], strict=True))
    left = decisions_of(lake, "day1")
    assert len(left) == 147 and not keys & set(zip(left["source"], left["position"],
                                                   strict=True))
    quarantined = pq.read_table(lake.quarantine("day1", "labels")).to_pandas()
    assert len(quarantined) == (left["action"] == "drop").sum()
    # when the log no longer removes them, they come back and are reviewed again
    back = review_labels(lake, ["day1", "day2"], removal_log(tmp_path / "d2", gone.iloc[:0]),
                         LABELS, LabelsConfig(policy="drop"))
    assert back.rows == 210 and back.noise_detection.startswith("incremental: 150 new rows")


def test_a_dropped_drop_leaves_the_decisions(two_nights: tuple[Lake, Path]) -> None:
    lake, _ = two_nights
    night(lake, ["day1", "day2"], LabelsConfig())
    result = night(lake, ["day2"], LabelsConfig())
    assert result.rows == 60 and not decisions_file(lake, "day1").exists()


def test_full_review_on_schedule_on_drift_and_on_new_settings(
        two_nights: tuple[Lake, Path]) -> None:
    lake, landing = two_nights
    every_two = LabelsConfig(full_review_every=2)
    assert night(lake, ["day1", "day2"], every_two).noise_detection.startswith("incremental")
    land(landing, lake, "day3", topic_rows(30, seed=13, prefix="c"))
    scheduled = night(lake, ["day1", "day2", "day3"], every_two)
    assert scheduled.noise_detection.startswith("full review of 240 rows (scheduled every 2")
    assert scheduled.rows_scored == 240
    sports = [r for r in topic_rows(90, seed=14, prefix="d") if r["label"] == "sports"]
    land(landing, lake, "day4", sports)  # one label only: the shares drift
    drifted = night(lake, ["day1", "day2", "day3", "day4"], every_two)
    assert drifted.noise_detection.startswith(
        "full review of 270 rows (the label shares of the new rows differ from the history's by "
        "0.67, more than drift_threshold 0.1)")  # sports: a third of the history, all of day4
    changed = night(lake, ["day1", "day2", "day3", "day4"], LabelsConfig(policy="flag"))
    assert "(the label settings changed)" in changed.noise_detection
    assert set(changed.actions) <= {"keep", "flag"}
