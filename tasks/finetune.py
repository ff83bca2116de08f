"""Finetune: a sequence classifier on the snapshot's train split, in one short loop.

Model: ``AutoModelForSequenceClassification`` from a local folder (no hub access). Device: CUDA
when present, else CPU with the bounded ``cpu_*`` budget of the config. Loop: AdamW, linear
warm-up/decay, dynamic padding, a tqdm bar; the model is saved (safetensors) with its tokenizer.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import task

from finegate.config import Config, TrainConfig
from finegate.lake import Lake
from tasks.snapshot import SnapshotResult


@dataclass(frozen=True)
class Budget:
    """The training budget actually used on this device."""

    device: str
    max_length: int
    batch_size: int
    learning_rate: float
    max_steps: int


@dataclass(frozen=True)
class FinetuneResult:
    """The trained model on disk and how it was trained."""

    model_dir: str
    device: str
    steps: int
    train_rows: int
    train_loss: float
    seconds: float
    params: dict[str, Any]


def pick_device(requested: str) -> str:
    """``cuda`` when asked for or available (``auto``), else ``cpu``."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return requested


def budget_for(train: TrainConfig, device: str) -> Budget:
    """The full budget on GPU; on CPU the bounded one (shorter sequences, capped steps)."""
    if device == "cpu":
        return Budget(device, train.cpu_max_length, train.cpu_batch_size,
                      train.cpu_learning_rate, train.cpu_max_steps)
    return Budget(device, train.max_length, train.batch_size, train.learning_rate,
                  train.max_steps)


def read_split(data_path: str | Path, split: str) -> tuple[list[str], list[str]]:
    """Texts and labels of one split of a snapshot, in a stable order (by id)."""
    table = pq.read_table(data_path, columns=["id", "text", "label", "split"]).to_pandas()
    rows = table.loc[table["split"] == split].sort_values("id")
    return rows["text"].tolist(), rows["label"].tolist()


def batches(encodings: list[dict[str, Any]], batch_size: int, shuffle: bool,
            rng: random.Random) -> list[list[dict[str, Any]]]:
    """Group encoded examples into batches, shuffled for training."""
    order = list(range(len(encodings)))
    if shuffle:
        rng.shuffle(order)
    return [[encodings[i] for i in order[s:s + batch_size]]
            for s in range(0, len(order), batch_size)]


def load_model(model_path: str, labels: list[str]) -> tuple[Any, Any]:
    """Tokenizer and a fresh classification head on the local encoder in ``model_path``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return tokenizer, model


def train_classifier(data_path: str, labels: list[str], train: TrainConfig, out_dir: Path,
                     on_progress: Callable[[int, int, float], None] | None = None,
                     ) -> FinetuneResult:
    """Fine-tune on the snapshot's train split and save model and tokenizer to ``out_dir``.

    ``on_progress(step, total, loss)`` is called about every 5% of the steps.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    torch.manual_seed(train.seed)
    rng = random.Random(train.seed)
    device = pick_device(train.device)
    budget = budget_for(train, device)
    tokenizer, model = load_model(train.resolved_model_path(), labels)
    texts, names = read_split(data_path, "train")
    label_id = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer(texts, truncation=True, max_length=budget.max_length)
    examples = [{"input_ids": ids, "attention_mask": mask, "labels": label_id[name]}
                for ids, mask, name in zip(encoded["input_ids"], encoded["attention_mask"],
                                           names, strict=True)]
    per_epoch = math.ceil(len(examples) / budget.batch_size)
    total = math.ceil(per_epoch * train.epochs)
    if budget.max_steps:
        total = min(total, budget.max_steps)
    collate = DataCollatorWithPadding(tokenizer)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=budget.learning_rate,
                                  weight_decay=train.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(train.warmup_ratio * total), total)
    started, step, losses = time.perf_counter(), 0, []
    with tqdm(total=total, desc=f"finetune ({device})", unit="step") as bar:
        while step < total:
            for batch in batches(examples, budget.batch_size, shuffle=True, rng=rng):
                inputs = {k: v.to(device) for k, v in collate(batch).items()}
                loss = model(**inputs).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if on_progress and (step % max(1, total // 20) == 0 or step == total):
                    on_progress(step, total, losses[-1])
                if step >= total:
                    break
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-max(1, len(losses) // 10):]
    return FinetuneResult(
        model_dir=str(out_dir), device=device, steps=step, train_rows=len(examples),
        train_loss=sum(tail) / len(tail), seconds=time.perf_counter() - started,
        params={"model_path": train.resolved_model_path(), "device": device,
                "max_length": budget.max_length, "batch_size": budget.batch_size,
                "learning_rate": budget.learning_rate, "steps": step, "epochs": train.epochs,
                "seed": train.seed},
    )


def model_dir(config: Config, snapshot: SnapshotResult) -> Path:
    """Where the model trained on a snapshot with this training config is kept."""
    settings = hashlib.sha256(config.train.model_dump_json().encode()).hexdigest()[:8]
    return Lake.at(config.lake_path).root / "models" / f"{snapshot.digest[:16]}-{settings}"


def training_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of a training: lake, snapshot digest and training config (if the model exists).

    A retried or re-run flow that reaches ``finetune`` with the same inputs reuses the model
    instead of training again; a deleted model folder or a new lake trains anew.
    """
    config, snapshot = parameters["config"], parameters["snapshot"]
    folder = model_dir(config, snapshot)
    present = (folder / "config.json").is_file()
    return f"finetune-{Lake.at(config.lake_path).id}-{folder.name}-{present}"


@task(name="finetune", cache_key_fn=training_cache_key, persist_result=True)
def finetune(config: Config, snapshot: SnapshotResult) -> FinetuneResult:
    """Prefect task: fine-tune on the validated snapshot's train split."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    progress = create_progress_artifact(0.0, key="finegate-training",
                                        description="Fine-tuning progress (% of steps)")

    def report(step: int, total: int, loss: float) -> None:
        update_progress_artifact(progress, 100 * step / total,
                                 description=f"step {step}/{total}, loss {loss:.3f}")

    return train_classifier(snapshot.data_path, config.labels, config.train,
                            model_dir(config, snapshot), on_progress=report)
