"""The GX gate: clean data passes; each kind of bad data fails on the expectation named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from finegate.core.config import Config
from finegate.core.history import record_history
from finegate.core.lake import Lake, write_json
from finegate.tasks.quality import build_scorecard
from finegate.tasks.validate import QualityGateFailed, load_suite_json, validate_rows
from tests.factories import LABELS, curate, gate_on, topic_rows, topic_text

CLEAN_CARD = {"snapshot": "0" * 64, "rows": 60, "duplicate_ids": 0, "class_balance": 1.0,
              "max_class_share": 0.5, "labels_present": 2, "min_class_rows": 30,
              "duplicate_ratio": 0.01, "empty_ratio": 0.0, "noise_ratio": 0.0,
              "annotation_consistency": 1.0, "quarantine_ratio": 0.0, "golden_train_leaks": 0,
              "drift": {"new_drop_label_linf": 0.0, "label_linf": 0.02,
                        "length_js_distance": 0.05, "median_length_change": 0.0,
                        "oov_rate": 0.01}}


def snapshot_dir(tmp_path: Path, partitions: int = 3, **changes: list) -> str:
    rows = {"id": [f"r{i}" for i in range(60)],
            "text": [f"a perfectly ordinary sentence number {i} " * 4 for i in range(60)],
            "label": ["a", "b"] * 30, "split": ["train", "test", "validation"] * 20}
    rows.update(changes)
    frame = pd.DataFrame(rows)
    path = tmp_path / "data"
    path.mkdir()
    size = len(frame) // partitions
    for n in range(partitions):
        frame.iloc[n * size:(n + 1) * size].to_parquet(path / f"part-{n}.parquet")
    return str(path)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return Config(lake_path=str(tmp_path_factory.mktemp("lake")), labels=["a", "b"])


def test_clean_snapshot_passes_with_data_docs(tmp_path: Path, config: Config) -> None:
    result = gate_on(snapshot_dir(tmp_path), CLEAN_CARD, config, tmp_path, "run-1")
    assert result.passed and not result.failures and not result.skipped
    assert Path(result.data_docs).is_file()
    assert (tmp_path / "data_docs" / "validations").is_dir()
    gate = json.loads(Path(result.gate_path).read_text())
    rows = [e for e in gate["expectations"] if e["suite"] == "curated_rows"]
    assert len(rows) == 6 and all(e["success"] for e in rows)


def test_partition_results_combine_to_true_totals(tmp_path: Path, config: Config) -> None:
    labels = ["a", "b"] * 25 + ["x"] * 10  # all ten bad labels in the last partition
    suite = load_suite_json(config.expectations_path, "curated_rows")
    result = validate_rows(snapshot_dir(tmp_path, label=labels), suite, {"label_set": ["a", "b"]})
    in_set = next(r for r in result.results if r.expectation_config.type ==
                  "expect_column_values_to_be_in_set" and
                  r.expectation_config.kwargs["column"] == "label")
    assert in_set.result["element_count"] == 60
    assert in_set.result["unexpected_count"] == 10
    assert not in_set.success and not result.success


def test_mostly_is_judged_on_the_combined_share(tmp_path: Path, config: Config) -> None:
    texts = ["a perfectly ordinary sentence, long enough"] * 59 + ["short"]  # 1/60 > 1%
    suite = load_suite_json(config.expectations_path, "curated_rows")
    result = validate_rows(snapshot_dir(tmp_path, text=texts), suite, {"label_set": ["a", "b"]})
    lengths = [r for r in result.results
               if r.expectation_config.type == "expect_column_value_lengths_to_be_between"]
    assert lengths[0].result["unexpected_count"] == 1
    assert not lengths[0].success  # 98.3% < mostly 0.99


@pytest.mark.parametrize(("changes", "card", "named"), [
    ({"label": ["a", "b"] * 29 + ["c", "a"]}, {}, "expect_column_values_to_be_in_set(column=label"),
    ({}, {"class_balance": 0.68, "max_class_share": 0.95}, "max_class_share"),
    ({}, {"duplicate_ratio": 0.7}, "duplicate flood"),
    ({}, {"empty_ratio": 0.15}, "column=empty_ratio, max_value=0.1"),
    ({}, {"drift": {**CLEAN_CARD["drift"], "label_linf": 0.3}}, "column=label_linf"),
    ({}, {"duplicate_ids": 2}, "column=duplicate_ids"),
    ({}, {"golden_train_leaks": 2}, "column=golden_train_leaks"),
], ids=["label-outside-set", "class-collapse", "duplicate-flood", "empty-texts",
        "label-drift", "duplicate-ids", "golden-leak"])
def test_bad_data_fails_on_the_named_expectation(tmp_path: Path, config: Config, changes: dict,
                                                 card: dict, named: str) -> None:
    with pytest.raises(QualityGateFailed) as failure:
        gate_on(snapshot_dir(tmp_path, **changes), {**CLEAN_CARD, **card}, config,
                          tmp_path)
    message = str(failure.value)
    assert message.startswith("The quality gate stopped the run before training")
    assert named in message
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["passed"] is False and named in gate["reason"]


def test_warnings_do_not_stop_the_flow(tmp_path: Path, config: Config) -> None:
    card = {**CLEAN_CARD, "duplicate_ratio": 0.3, "rows": 10, "noise_ratio": 0.15}
    result = gate_on(snapshot_dir(tmp_path), card, config, tmp_path)
    assert result.passed
    assert len(result.warnings) == 3


def test_first_snapshot_skips_drift_against_previous(tmp_path: Path, config: Config) -> None:
    card = {**CLEAN_CARD, "drift": {"new_drop_label_linf": 0.0, "previous_rows": None}}
    result = gate_on(snapshot_dir(tmp_path), card, config, tmp_path)
    assert result.passed
    assert len(result.skipped) == 4 and all("skipped" in s for s in result.skipped)


@pytest.mark.parametrize(("suite", "expectation", "message"), [
    ("curated_dataset", {"type": "expect_column_values_to_be_between", "meta": {
        "severity": "critcal"}, "kwargs": {"column": "rows", "min_value": 1}}, "'critcal'"),
    ("curated_rows", {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
     "not a per-row expectation"),
    ("curated_rows", {"type": "expect_column_mean_to_be_between", "kwargs": {
        "column": "id", "min_value": 0}}, "not a per-row expectation"),
    ("curated_dataset", {"type": "expect_column_values_to_be_between", "kwargs": {
        "column": "dupe_ratio", "max_value": 0.1}}, "'dupe_ratio', which is not a metric"),
], ids=["misspelt-severity", "uniqueness-in-rows", "aggregate-in-rows", "unknown-metric"])
def test_a_suite_the_gate_would_misread_is_refused(tmp_path: Path, config: Config, suite: str,
                                                   expectation: dict, message: str) -> None:
    import shutil

    from finegate.tasks.validate import SuiteError

    folder = tmp_path / "expectations"
    shutil.copytree(config.expectations_path, folder)
    path = folder / f"{suite}.json"
    edited = json.loads(path.read_text())
    edited["expectations"].append(expectation)
    path.write_text(json.dumps(edited))
    with pytest.raises(SuiteError, match=message):
        gate_on(snapshot_dir(tmp_path), CLEAN_CARD,
                          config.model_copy(update={"expectations_path": str(folder)}), tmp_path)


def test_agreement_is_skipped_without_annotators(tmp_path: Path, config: Config) -> None:
    card = {**CLEAN_CARD, "annotation_consistency": None}
    result = gate_on(snapshot_dir(tmp_path), card, config, tmp_path)
    assert result.passed
    assert [s for s in result.skipped if "annotation_consistency" in s]


def test_bad_data_fails_the_gate_from_the_rows_up(dirty_landing: Path, tmp_path: Path) -> None:
    """Not injected metrics: a skewed second delivery and a duplicate flood, curated, scored,
    gated."""
    config = Config(lake_path=str(tmp_path / "lake"), labels=LABELS)
    lake = Lake.at(config.lake_path)
    snapshot, dedup, review = curate(dirty_landing, lake)
    first = build_scorecard(129, snapshot, lake, LABELS, dedup, review)
    gate_on(snapshot.data_path, first, config, tmp_path / "night1")  # passes
    record_history(lake, first["snapshot"],
                   write_json(Path(snapshot.path) / "scorecard.json", first))
    rng = random.Random(5)
    for i in range(60):  # the next delivery is all tech
        (dirty_landing / "day1" / "Tech" / f"more-{i}.txt").write_text(topic_text("tech", rng))
    snapshot, dedup, review = curate(dirty_landing, lake)
    skewed = build_scorecard(189, snapshot, lake, LABELS, dedup, review)
    with pytest.raises(QualityGateFailed, match="column=label_linf"):
        gate_on(snapshot.data_path, skewed, config, tmp_path / "night2")

    flood = tmp_path / "flood"
    rows = "".join(json.dumps(r) + "\n" for r in topic_rows(30, seed=8, prefix="f"))
    for drop, copies in (("day1", 1), ("day2", 2)):
        (flood / drop).mkdir(parents=True)
        (flood / drop / "rows.jsonl").write_text(rows * copies)
    lake = Lake.at(tmp_path / "flood-lake")
    snapshot, dedup, review = curate(flood, lake)
    card = build_scorecard(90, snapshot, lake, LABELS, dedup, review)
    assert card["duplicate_ratio"] == pytest.approx(60 / 90)
    with pytest.raises(QualityGateFailed, match="duplicate flood"):
        gate_on(snapshot.data_path, card, config.model_copy(
            update={"lake_path": str(lake.root)}), tmp_path / "flood-run")


def broken_suites(tmp_path: Path, config: Config, suite: str, edit) -> Path:
    import shutil

    folder = tmp_path / "expectations"
    shutil.copytree(config.expectations_path, folder)
    path = folder / f"{suite}.json"
    path.write_text(edit(path.read_text()))
    return folder


def test_a_truncated_suite_is_named_with_its_line_and_column(tmp_path: Path,
                                                             config: Config) -> None:
    from finegate.tasks.validate import SuiteError, check_suites

    folder = broken_suites(tmp_path, config, "curated_drift", lambda text: text[:len(text) // 2])
    with pytest.raises(SuiteError, match=r"curated_drift.json is not valid JSON: .* at line "
                                         r"\d+, column \d+"):
        check_suites(folder)


@pytest.mark.parametrize(("expectation", "message"), [
    ({"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "rows"}},
     r"expectation 16 \(expect_column_values_to_be_betwen\) is not valid: .*not found"),
    ({"type": "expect_column_values_to_be_between", "kwargs": {"colum": "rows"}},
     r"expectation 16 \(expect_column_values_to_be_between\) is not valid"),
    ({"kwargs": {"column": "rows"}}, r"expectation 16 needs a \"type\""),
], ids=["unknown-type", "unknown-argument", "no-type"])
def test_a_suite_gx_would_refuse_is_refused_before_any_work(tmp_path: Path, config: Config,
                                                            expectation: dict,
                                                            message: str) -> None:
    from finegate.tasks.validate import SuiteError, check_suites

    def append(text: str) -> str:
        suite = json.loads(text)
        suite["expectations"].append(expectation)
        return json.dumps(suite)

    assert len(json.loads(Path(config.expectations_path, "curated_dataset.json").read_text())[
        "expectations"]) == 15
    with pytest.raises(SuiteError, match=message):
        check_suites(broken_suites(tmp_path, config, "curated_dataset", append))
