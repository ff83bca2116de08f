import json
import math
from pathlib import Path

import pandas as pd
import pytest

from finegate.core.config import EvaluationConfig, LabelSet, TrainConfig
from finegate.core.device import budget_for, eval_max_length, pick_device
from finegate.tasks import finetune
from finegate.tasks.evaluate import evaluate_model, per_class_rows
from tests.factories import LABELS, topic_rows


class Killed(RuntimeError):
    """Raised from the progress callback: the run dies after a checkpoint."""


def kill_at(step_to_die: int):
    """A progress callback that kills the run at ``step_to_die``."""
    def on_progress(step: int, total: int, loss: float) -> None:
        if step == step_to_die:
            raise Killed(f"killed at step {step}")
    return on_progress


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
    assert (eval_max_length(train, "cpu"), eval_max_length(train, "cuda")) == (64, 256)


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
    result = finetune.train(snapshot_data, LABELS, train, tmp_path / "model")
    assert result.steps == 6 and result.train_rows == 60
    assert math.isfinite(result.train_loss)
    assert (tmp_path / "model" / "model.safetensors").is_file()
    golden = pd.DataFrame(topic_rows(9, seed=8, prefix="g"))
    golden.loc[0, "label"] = " Sport "  # an alias, read like the nightly data
    golden.to_json(tmp_path / "golden.jsonl", orient="records", lines=True)
    evaluation = evaluate_model(result.model_dir, snapshot_data, tmp_path,
                                label_set=LabelSet(tuple(LABELS), {"sport": "sports"}),
                                train=train, evaluation=EvaluationConfig(
                                    golden_path=str(tmp_path / "golden.jsonl")))
    assert evaluation.test_rows == 30 and evaluation.golden_rows == 9
    assert evaluation.golden_macro_f1 is not None
    report = json.loads(Path(evaluation.report_path).read_text())
    assert set(LABELS) <= set(report["test"]["per_class"])
    assert sum(map(sum, report["test"]["confusion_matrix"]["matrix"])) == 30
    assert Path(report["test"]["confusion_png"]).stat().st_size > 1000
    assert len(report["test"]["misclassified"]) == round(30 * (1 - evaluation.accuracy))
    assert 0.0 <= evaluation.macro_f1 <= 1.0
    assert report["golden"]["truth"][0] == "sports"
    rows = per_class_rows(evaluation.report_path)
    assert {(r["set"], r["class"]) for r in rows} >= {(s, c) for s in ("test", "golden")
                                                      for c in LABELS}


def test_without_a_step_cap_epochs_set_the_length(tiny_model_dir: Path, snapshot_data: str,
                                                 tmp_path: Path) -> None:
    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=16,
                        cpu_batch_size=16, cpu_max_steps=0, epochs=2)
    assert finetune.train(snapshot_data, LABELS, train, tmp_path / "m").steps == 8


def test_killed_training_resumes_to_the_same_weights(tiny_model_dir: Path, snapshot_data: str,
                                                    tmp_path: Path) -> None:
    from safetensors.torch import load_file

    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=32,
                        cpu_batch_size=8, cpu_max_steps=8, epochs=2, checkpoint_every=3)
    straight = finetune.train(snapshot_data, LABELS, train, tmp_path / "straight")
    with pytest.raises(Killed):  # dies at step 5: steps 4 and 5 are lost, the checkpoint kept
        finetune.train(snapshot_data, LABELS, train, tmp_path / "killed", on_progress=kill_at(5))
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = finetune.train(snapshot_data, LABELS, train, tmp_path / "killed")
    assert resumed.resumed_from == 3 and resumed.steps == straight.steps == 8
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def test_length_grouped_batches_cover_every_row_once_with_less_padding() -> None:
    from finegate.tasks.finetune import length_grouped_batches

    lengths = [5, 100, 6, 98, 7, 99, 5, 101] * 10
    batches = length_grouped_batches(lengths, 4, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(80))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 0.7 * 80 * 101
    assert batches == length_grouped_batches(lengths, 4, seed=1)


def test_class_weights_only_when_imbalanced() -> None:
    from finegate.tasks.finetune import class_weights

    assert class_weights(["a", "b"] * 5, ["a", "b"], 1.5) is None
    weights = class_weights(["a"] * 8 + ["b"] * 2, ["a", "b"], 1.5)
    assert weights == pytest.approx([10 / 16, 10 / 4])


def test_early_stopping_keeps_the_best_validation_model(tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    rows = pd.DataFrame(topic_rows(90, seed=5, prefix="s"))
    rows["split"] = ["train", "validation", "test"] * 30
    rows.to_parquet(tmp_path / "data.parquet")
    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=16,
                        cpu_batch_size=4, cpu_max_steps=60, epochs=20, cpu_eval_every=2,
                        patience=2, cpu_learning_rate=1e-6)
    reported = []
    result = finetune.train(str(tmp_path / "data.parquet"), LABELS, train, tmp_path / "m",
                            on_progress=lambda step, total, loss: reported.append(step))
    assert result.best_validation_macro_f1 is not None
    assert result.stopped_early and result.steps < 60
    assert result.params["best_step"] < result.steps  # the saved model is the best, not the last
    assert reported[-1] == result.steps  # the last step is reported even when stopping early


def test_the_gpu_settings_run_on_cpu_too(tiny_model_dir: Path, snapshot_data: str,
                                         tmp_path: Path, monkeypatch) -> None:
    """bf16 autocast, fused AdamW and torch.compile: the CUDA path's code, exercised on CPU."""
    from dataclasses import replace
    from functools import partial

    import torch

    # Dynamo graph capture and AOTAutograd run for real; inductor's C++ code generation would
    # take ~100 s on 2 CPU cores, so it is left to GPU runs.
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", max_length=32,
                        batch_size=8, max_steps=3, epochs=1, compile=True)
    gpu_budget = replace(budget_for(train, "cuda"), device="cpu")
    assert gpu_budget.bf16 and gpu_budget.fused_adamw and gpu_budget.compile
    result = finetune.train(snapshot_data, LABELS, train, tmp_path / "m", budget=gpu_budget)
    assert result.steps == 3 and math.isfinite(result.train_loss)
    assert result.params["bf16"] and result.params["fused_adamw"] and result.params["compile"]
    assert (tmp_path / "m" / "model.safetensors").is_file()


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from finegate.core.config import TrainConfig
from finegate.tasks.finetune import train

def kill_at_step_5(step, total, loss):
    if step == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # no exception, no cleanup: a real kill

settings = TrainConfig.model_validate_json(sys.argv[1])
train(sys.argv[2], {labels}, settings, Path(sys.argv[3]), on_progress=kill_at_step_5)
"""


def test_a_sigkilled_training_resumes_to_the_same_weights(tiny_model_dir: Path,
                                                          snapshot_data: str,
                                                          tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from safetensors.torch import load_file

    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=32,
                        cpu_batch_size=8, cpu_max_steps=8, epochs=2, checkpoint_every=2)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT.format(labels=LABELS), train.model_dump_json(),
         snapshot_data, str(tmp_path / "killed")], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = finetune.train(snapshot_data, LABELS, train, tmp_path / "killed")
    straight = finetune.train(snapshot_data, LABELS, train, tmp_path / "straight")
    assert resumed.resumed_from == 4 and resumed.steps == straight.steps == 8
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    assert all(torch_equal(a[k], b[k]) for k in a)


def test_predict_batches_by_length_and_keeps_the_order_of_the_texts(monkeypatch) -> None:
    """A stand-in model labels a text by its token count, so any mix-up of rows shows."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoTokenizer

    from finegate.core import inference
    from finegate.core.config import demo_model_path

    widths = []

    def model(input_ids, attention_mask, **_):
        widths.append(input_ids.shape[1])
        tokens = attention_mask.sum(-1)
        return SimpleNamespace(logits=torch.stack([tokens <= 6, tokens > 6], -1).float())

    model.config = SimpleNamespace(id2label={0: "short", 1: "long"})
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    monkeypatch.setattr(inference, "load_classifier", lambda *args: (tokenizer, model))
    texts = ["one two three four five six seven eight", "hi", "a b", "one two three four five",
             "x " * 50, "yes"]
    predicted = inference.predict("unused", texts, 16, "cpu", batch_size=2)
    assert predicted == ["long", "short", "short", "long", "long", "short"]
    assert widths == sorted(widths) and len(widths) == 3  # short texts share a batch
    assert inference.predict("unused", [], 16, "cpu") == []


class RunsCode:
    """A pickled object that would run code when unpickled (what a tampered checkpoint holds)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_pickled_code_is_refused_not_run(tiny_model_dir: Path,
                                                              snapshot_data: str,
                                                              tmp_path: Path) -> None:
    """The resume checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain
    values only, so a checkpoint that smuggles an object in is an error and its code never runs."""
    import pickle

    import torch

    checkpoint = tmp_path / "model" / "checkpoint" / "state.pt"
    checkpoint.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "payload": RunsCode(marker)}, checkpoint)
    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=16,
                        cpu_batch_size=8, cpu_max_steps=2, epochs=1)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        finetune.train(snapshot_data, LABELS, train, tmp_path / "model")
    assert not marker.exists()
