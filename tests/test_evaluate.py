"""Evaluation leaves leaked golden rows out of the golden metric, and shows what they did."""

import json
from pathlib import Path

import pandas as pd

from finegate.core.config import EvaluationConfig, TrainConfig
from finegate.tasks.evaluate import evaluate_model
from finegate.tasks.finetune import train
from tests.factories import LABEL_SET, LABELS, topic_rows


def test_leaked_golden_rows_are_left_out_of_the_golden_score(tmp_path: Path,
                                                             tiny_model_dir: Path) -> None:
    rows = pd.DataFrame(topic_rows(60, seed=5, prefix="s"))
    rows["split"] = ["train", "train", "test"] * 20
    data = tmp_path / "data.parquet"
    rows.to_parquet(data)
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in topic_rows(12, seed=9, prefix="g")))
    settings = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_steps=2,
                           cpu_max_length=16, cpu_batch_size=8)
    model = train(str(data), LABELS, settings, tmp_path / "model")
    result = evaluate_model(model.model_dir, str(data), tmp_path / "run", label_set=LABEL_SET,
                            train=settings, evaluation=EvaluationConfig(golden_path=str(golden)),
                            leaked_golden=[0, 5])
    report = json.loads(Path(result.report_path).read_text())["golden"]
    assert result.golden_rows == report["rows"] == 10
    assert report["excluded_rows"] == [0, 5] and len(report["truth"]) == 10
    assert report["with_leaked_rows"]["rows"] == 12
    assert report["with_leaked_rows"]["leaked_rows"] == 2


def test_a_large_test_split_on_cpu_is_scored_on_a_capped_sample_promotion_reuses(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    from finegate.tasks.evaluate import test_rows_scored
    from finegate.tasks.promote import evaluation_texts

    assert test_rows_scored(10, None) == list(range(10))
    assert test_rows_scored(100, 10) == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    rows = pd.DataFrame(topic_rows(60, seed=5, prefix="s"))
    rows["split"] = ["train", "test", "test"] * 20  # 40 test rows
    data = tmp_path / "data.parquet"
    rows.to_parquet(data)
    settings = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_steps=1,
                           cpu_max_length=16, cpu_batch_size=8)
    model = train(str(data), LABELS, settings, tmp_path / "model")
    result = evaluate_model(model.model_dir, str(data), tmp_path / "run", label_set=LABEL_SET,
                            train=settings, evaluation=EvaluationConfig(cpu_max_test_rows=10))
    report = json.loads(Path(result.report_path).read_text())
    assert result.test_rows == report["test"]["rows"] == 10
    assert report["test"]["split_rows"] == 40 and len(report["test"]["rows_scored"]) == 10
    texts = evaluation_texts(report, "", LABEL_SET)  # what the champion is scored on
    test = rows.loc[rows["split"] == "test"].sort_values("id")
    assert texts == [test["text"].iloc[i] for i in report["test"]["rows_scored"]]


def test_time_split_reports_the_newest_drop_against_the_older_ones(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    from finegate.tasks.report import freshness_parts

    older = pd.DataFrame(topic_rows(60, seed=5, prefix="o")).assign(drop="d1")
    older["split"] = ["train", "train", "validation"] * 20
    newest = pd.DataFrame(topic_rows(24, seed=6, prefix="n")).assign(drop="d2", split="test")
    newest["label"] = LABELS[0]  # tonight's drop is all one label: drift
    snapshot = tmp_path / "snap"
    (snapshot / "data").mkdir(parents=True)
    pd.concat([older, newest]).to_parquet(snapshot / "data" / "part.parquet")
    settings = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_steps=1,
                           cpu_max_length=16, cpu_batch_size=8)
    model = train(str(snapshot / "data"), LABELS, settings, tmp_path / "model")
    for strategy, plan in (("hash", {}), ("time", {"test_drops": ["d2"]})):
        (snapshot / "manifest.json").write_text(json.dumps(
            {"split": {"strategy": strategy, **plan}}))
        result = evaluate_model(model.model_dir, str(snapshot / "data"), tmp_path / strategy,
                                label_set=LABEL_SET, train=settings,
                                evaluation=EvaluationConfig())
        assert (tmp_path / strategy / "freshness.json").is_file() == (strategy == "time")
    fresh = json.loads((tmp_path / "time" / "freshness.json").read_text())
    assert fresh["newest_drops"] == ["d2"] and fresh["newest"]["rows"] == 24 == result.test_rows
    assert fresh["older"]["rows"] == 20 and fresh["older"]["split"] == "validation"
    assert fresh["macro_f1_change"] == fresh["newest"]["macro_f1"] - fresh["older"]["macro_f1"]
    assert fresh["drift"]["against_train"]["label_linf"] == 0.5  # one label: 1.0 vs 0.5 in train
    page = "".join(freshness_parts(str(tmp_path / "time")))
    assert "Freshness: newest drop(s) d2" in page and "label_linf" in page
