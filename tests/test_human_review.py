"""People's reviews (review drops) override the label review, with lineage (issue #17)."""

import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import DedupConfig, LabelsConfig, SplitConfig
from finegate.core.consensus import crowd_consensus
from finegate.core.lake import Lake
from finegate.core.results import LabelsResult, SnapshotResult
from finegate.tasks.clean import clean_drop
from finegate.tasks.dedup import dedup_drops
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.labels import review_labels
from finegate.tasks.quality import build_scorecard
from finegate.tasks.snapshot import build_curated_snapshot
from tests.factories import LABEL_SET, LABELS, topic_rows

TRUTH = topic_rows(150, seed=11, prefix="n")
FLIPPED = list(range(0, 70, 7))  # 10 wrong labels the label review drops


def next_label(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % 3]


def write_drop(landing: Path, drop: str, rows: list[dict]) -> None:
    (landing / drop).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_json(landing / drop / "rows.jsonl", orient="records", lines=True)


def run_night(landing: Path, lake: Lake, drops: list[str], new: list[str],
              ) -> tuple[LabelsResult, SnapshotResult, dict, int]:
    read = 0
    for drop in drops:
        if drop in new:
            read += ingest_drop(landing, drop, lake).rows_read
            clean_drop(drop, lake, LABEL_SET)
    dedup = dedup_drops(lake, drops, DedupConfig())
    review = review_labels(lake, drops, dedup, LABELS, LabelsConfig(policy="drop"))
    snapshot = build_curated_snapshot(lake, drops, dedup, review, SplitConfig())
    return review, snapshot, dedup, read


def test_review_drop_overrides_label_review_with_lineage(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    noisy = [{**r, "label": next_label(r["label"]) if i in FLIPPED else r["label"]}
             for i, r in enumerate(TRUTH)]
    write_drop(landing, "day1", noisy)
    review1, _, _, read1 = run_night(landing, lake, ["day1"], ["day1"])
    dropped = set(pq.read_table(lake.quarantine("day1", "labels")).to_pandas()["id"])
    assert review1.actions["drop"] == len(dropped) >= 8
    confirmed, corrected = sorted(dropped)[:2]  # dropped rows people look at
    kept = "n-1"  # a right label the label review kept; people say otherwise
    people = {"ann1": "x", "ann2": "x", "ann3": "x"}
    by_id = {r["id"]: r for r in noisy}
    truth = {r["id"]: r["label"] for r in TRUTH}
    answers = {confirmed: by_id[confirmed]["label"],  # the person confirms the given label
               corrected: truth[corrected], kept: next_label(truth[kept])}
    write_drop(landing, "day2-review", [
        {"text": by_id[i]["text"], "annotator_labels": {a: lab for a in people},
         "review_of": i, "queue": "nightly-q", "annotated_at": "2026-11-29T10:00:00Z"}
        for i, lab in answers.items()])
    review, snapshot, dedup, read2 = run_night(landing, lake, ["day1", "day2-review"],
                                               ["day2-review"])
    card = build_scorecard(read1 + read2, snapshot, lake, LABELS, dedup, review)
    # the review rows are exact duplicates of their rows: logged, and every row adds up
    assert dedup.exact_duplicates >= 3 and card["accounting"]["holds"], card["accounting"]
    data = pq.read_table(snapshot.data_path).to_pandas().set_index("id")
    for row_id, label in answers.items():
        assert data.loc[row_id, "label"] == label
        flags = list(data.loc[row_id, "flags"])
        assert {"human_review", "reviewed_by:ann1+ann2+ann3", "review_queue:nightly-q",
                "annotated_at:2026-11-29T10:00:00Z"} <= set(flags)
    assert f"human_relabelled_from:{by_id[corrected]['label']}" in data.loc[corrected, "flags"]
    assert not any(f.startswith("human_relabelled") for f in data.loc[confirmed, "flags"])
    left = set(pq.read_table(lake.quarantine("day1", "labels")).to_pandas()["id"])
    assert left == dropped - {confirmed, corrected}
    assert card["human_reviewed_rows"] == 3 and card["human_relabels"] == 2
    assert card["human_review"]["restored"] == 2
    assert card["human_review"]["consensus"].startswith("CROWDLAB")
    assert set(card["human_review"]["annotator_quality"]) == set(people)
    assert review.annotation.rows_with_annotators == 3  # the review votes count in agreement
    decisions = pq.read_table(lake.labels).to_pandas().set_index("id")
    assert list(decisions.loc[kept, "reviewed_by"]) == sorted(people)
    assert decisions.loc[kept, "review_of"] == kept

    # a night with nothing new: same snapshot, the consensus is not recomputed
    again, snapshot_again, _, _ = run_night(landing, lake, ["day1", "day2-review"], [])
    assert snapshot_again.digest == snapshot.digest and again.reviews == review.reviews

    # a later review by the same annotators replaces their earlier votes on that row
    write_drop(landing, "day3-review", [
        {"text": by_id[kept]["text"], "annotator_labels": {a: truth[kept] for a in people},
         "queue": "second-look", "annotated_at": "2026-11-30T08:00:00Z"}])
    later, snapshot_later, _, _ = run_night(landing, lake, ["day1", "day2-review",
                                                            "day3-review"], ["day3-review"])
    row = pq.read_table(snapshot_later.data_path).to_pandas().set_index("id").loc[kept]
    assert row["label"] == truth[kept] and "review_queue:second-look" in row["flags"]
    assert later.reviews.rows_reviewed == 3 and later.reviews.relabelled == 1
    assert later.reviews.review_rows == 4

    # withdrawn: the review drops leave the history, the label review's decisions return
    shutil.rmtree(landing / "day2-review")
    shutil.rmtree(landing / "day3-review")
    review3, snapshot3, dedup3, _ = run_night(landing, lake, ["day1"], [])
    assert review3.reviews.rows_reviewed == 0
    assert set(pq.read_table(lake.quarantine("day1", "labels")).to_pandas()["id"]) == dropped
    assert snapshot3.rows == 150 - dedup3.duplicates - len(dropped)


def test_crowdlab_weighs_a_sloppy_annotator_less() -> None:
    rng = random.Random(3)
    truth = [LABELS[i % 3] for i in range(60)]
    probabilities = np.full((60, 3), 0.2)
    for i, label in enumerate(truth):
        probabilities[i, LABELS.index(label)] = 0.6
    votes = [[t if rng.random() < 0.9 else next_label(t),
              t if rng.random() < 0.9 else next_label(t),
              rng.choice(LABELS)] for t in truth]
    voters = [["careful1", "careful2", "sloppy"]] * 60
    result = crowd_consensus(votes, voters, LABELS, probabilities)
    assert result.method.startswith("CROWDLAB")
    quality = result.annotator_quality
    assert quality["sloppy"] < min(quality["careful1"], quality["careful2"])
    assert (result.rows["label"] == pd.Series(truth)).mean() >= 0.95
    assert result.rows["quality"].between(0, 1).all()
    majority = crowd_consensus(votes, voters, LABELS, None)
    assert majority.method.startswith("majority") and majority.rows["quality"].isna().all()
