import json
import math
from pathlib import Path

import pandas as pd
import pytest

from finegate.config import Config, TrainConfig
from tasks.evaluate import evaluate_model
from tasks.finetune import budget_for, pick_device, train_classifier
from tests.conftest import LABELS, topic_rows


@pytest.fixture
def snapshot_data(tmp_path: Path) -> str:
    rows = pd.DataFrame(topic_rows(90, seed=5, prefix="s"))
    rows["split"] = ["train", "train", "test"] * 30
    path = tmp_path / "data.parquet"
    rows.to_parquet(path)
    return str(path)


def test_cpu_uses_the_bounded_budget_and_gpu_the_full_one() -> None:
    train = TrainConfig(max_length=256, batch_size=32, max_steps=0, cpu_max_length=64,
                        cpu_batch_size=8, cpu_max_steps=10)
    assert budget_for(train, "cpu").max_length == 64
    assert budget_for(train, "cpu").max_steps == 10
    gpu = budget_for(train, "cuda")
    assert (gpu.max_length, gpu.batch_size, gpu.max_steps) == (256, 32, 0)


def test_asking_for_cuda_without_a_gpu_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert pick_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        pick_device("cuda")


def test_tiny_bert_trains_saves_and_evaluates(tiny_model_dir: Path, snapshot_data: str,
                                              tmp_path: Path) -> None:
    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=32,
                        cpu_batch_size=8, cpu_max_steps=6, epochs=1)
    result = train_classifier(snapshot_data, LABELS, train, tmp_path / "model")
    assert result.steps == 6 and result.train_rows == 60
    assert math.isfinite(result.train_loss)
    assert (tmp_path / "model" / "model.safetensors").is_file()
    config = Config(labels=LABELS, train=train)
    evaluation = evaluate_model(result.model_dir, snapshot_data, config, tmp_path)
    assert evaluation.test_rows == 30
    report = json.loads(Path(evaluation.report_path).read_text())
    assert set(LABELS) <= set(report["per_class"])
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 30
    assert 0.0 <= evaluation.macro_f1 <= 1.0


def test_without_a_step_cap_epochs_set_the_length(tiny_model_dir: Path, snapshot_data: str,
                                                 tmp_path: Path) -> None:
    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=16,
                        cpu_batch_size=16, cpu_max_steps=0, epochs=2)
    assert train_classifier(snapshot_data, LABELS, train, tmp_path / "m").steps == 8
