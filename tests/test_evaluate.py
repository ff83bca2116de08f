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
