"""Finetune: a sequence classifier on the snapshot's train split, in one short loop.

Model: ``AutoModelForSequenceClassification`` from a local folder (no hub access), SDPA attention.
Data: dynamic padding to a multiple of 8, length-grouped batches, class weights when the train
split is imbalanced. Loop: AdamW (fused on CUDA), linear warm-up/decay, bf16 autocast on CUDA,
optional ``torch.compile``, validation macro-F1 every ``eval_every`` steps with early stopping
(the best weights are kept), and a checkpoint every ``checkpoint_every`` steps that a killed run
resumes from, reproducing the uninterrupted run. CPU runs use the bounded ``cpu_*`` budget.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import task

from finegate.config import Config, TrainConfig
from finegate.lake import Lake
from tasks.snapshot import SnapshotResult


class TrainingInterrupted(RuntimeError):
    """Raised by ``stop_after`` (tests simulate a kill with it) after a checkpoint is written."""


@dataclass(frozen=True)
class Budget:
    """The training budget actually used on this device."""

    device: str
    max_length: int
    batch_size: int
    learning_rate: float
    max_steps: int
    eval_every: int
    bf16: bool
    fused_adamw: bool
    compile: bool


@dataclass(frozen=True)
class FinetuneResult:
    """The trained model on disk and how it was trained."""

    model_dir: str
    device: str
    steps: int
    train_rows: int
    train_loss: float
    best_validation_macro_f1: float | None
    stopped_early: bool
    resumed_from: int
    seconds: float
    samples_per_second: float
    params: dict[str, Any]


def pick_device(requested: str) -> str:
    """``cuda`` when asked for or available (``auto``), else ``cpu``."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return requested


def budget_for(train: TrainConfig, device: str, bf16_supported: bool = True) -> Budget:
    """The full budget on GPU (bf16 when supported, fused AdamW, optional compile); on CPU the
    bounded one in plain fp32."""
    if device == "cpu":
        return Budget(device, train.cpu_max_length, train.cpu_batch_size,
                      train.cpu_learning_rate, train.cpu_max_steps, train.cpu_eval_every,
                      bf16=False, fused_adamw=False, compile=False)
    return Budget(device, train.max_length, train.batch_size, train.learning_rate,
                  train.max_steps, train.eval_every, bf16=bf16_supported, fused_adamw=True,
                  compile=train.compile)


def read_split(data_path: str | Path, split: str) -> tuple[list[str], list[str]]:
    """Texts and labels of one split of a snapshot, in a stable order (by id)."""
    table = pq.read_table(data_path, columns=["id", "text", "label", "split"]).to_pandas()
    rows = table.loc[table["split"] == split].sort_values("id")
    return rows["text"].tolist(), rows["label"].tolist()


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding), the same for the same seed."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def class_weights(names: list[str], labels: list[str], imbalance: float) -> list[float] | None:
    """``N / (C * n_c)`` per class when the largest class is ``imbalance``× the smallest."""
    counts = Counter(names)
    present = [counts.get(label, 0) for label in labels]
    if min(present) == 0 or max(present) / min(present) < imbalance:
        return None
    return [len(names) / (len(labels) * n) for n in present]


def load_model(model_path: str, labels: list[str]) -> tuple[Any, Any]:
    """Tokenizer and a fresh classification head on the local encoder in ``model_path``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, attn_implementation="sdpa",
    )
    return tokenizer, model


def macro_f1(model: Any, batches: list[dict[str, Any]], device: str, bf16: bool) -> float:
    """Macro-F1 of ``model`` on pre-collated validation batches."""
    import torch
    from sklearn.metrics import f1_score

    model.eval()
    truth, predicted = [], []
    with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=bf16):
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            predicted += model(**inputs).logits.argmax(-1).tolist()
            truth += batch["labels"].tolist()
    model.train()
    return float(f1_score(truth, predicted, average="macro")) if truth else 0.0


def train_classifier(data_path: str, labels: list[str], train: TrainConfig, out_dir: Path,
                     on_progress: Callable[[int, int, float], None] | None = None,
                     stop_after: int | None = None, budget: Budget | None = None,
                     ) -> FinetuneResult:
    """Fine-tune on the snapshot's train split; save the best model and tokenizer to ``out_dir``.

    Resumes from ``out_dir/checkpoint`` when one exists. ``on_progress(step, total, loss)`` is
    called about every 5% of the steps; ``stop_after`` simulates a kill after that step.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    random.seed(train.seed)
    torch.manual_seed(train.seed)
    device = pick_device(train.device)
    if device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    budget = budget or budget_for(train, device,
                                  device == "cuda" and torch.cuda.is_bf16_supported())
    tokenizer, model = load_model(train.resolved_model_path(), labels)
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    label_id = {label: i for i, label in enumerate(labels)}

    def encode(split: str) -> list[dict[str, Any]]:
        texts, names = read_split(data_path, split)
        if not texts:
            return []
        enc = tokenizer(texts, truncation=True, max_length=budget.max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": label_id[n]}
                for i, m, n in zip(enc["input_ids"], enc["attention_mask"], names, strict=True)]

    examples, validation = encode("train"), encode("validation")
    lengths = [len(e["input_ids"]) for e in examples]
    validation_batches = [collate(validation[i:i + 64]) for i in range(0, len(validation), 64)]
    per_epoch = math.ceil(len(examples) / budget.batch_size)
    total = math.ceil(per_epoch * train.epochs)
    total = min(total, budget.max_steps) if budget.max_steps else total
    weights = class_weights([labels[e["labels"]] for e in examples], labels, train.imbalance)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, device=device) if weights else None)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=budget.learning_rate,
                                  weight_decay=train.weight_decay, fused=budget.fused_adamw)
    schedule = get_linear_schedule_with_warmup(optimizer, int(train.warmup_ratio * total), total)
    forward = torch.compile(model) if budget.compile else model

    checkpoint = out_dir / "checkpoint"
    state = {"step": 0, "best": None, "best_step": 0, "bad_evals": 0, "losses": []}
    if (checkpoint / "state.pt").is_file():
        saved = torch.load(checkpoint / "state.pt", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["rng"])
        if device == "cuda" and saved.get("cuda_rng"):
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state, best_weights = saved["progress"], saved["best_weights"]
    else:
        best_weights = None
    resumed_from = state["step"]
    started, stopped_early = time.perf_counter(), False
    with tqdm(total=total, initial=state["step"], desc=f"finetune ({device})", unit="step") as bar:
        while state["step"] < total and not stopped_early:
            epoch, offset = divmod(state["step"], per_epoch)
            for indices in length_grouped_batches(lengths, budget.batch_size,
                                                  train.seed + epoch)[offset:]:
                collated = collate([examples[i] for i in indices])
                batch = {k: v.to(device) for k, v in collated.items()}
                target = batch.pop("labels")
                with torch.autocast(device, torch.bfloat16, enabled=budget.bf16):
                    loss = loss_fn(forward(**batch).logits.float(), target)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                state["losses"].append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{state['losses'][-1]:.3f}")
                step = state["step"]
                if on_progress and (step % max(1, total // 20) == 0 or step == total):
                    on_progress(step, total, state["losses"][-1])
                if validation_batches and (step % budget.eval_every == 0 or step == total):
                    score = macro_f1(model, validation_batches, device, budget.bf16)
                    if state["best"] is None or score > state["best"]:
                        state.update(best=score, best_step=step, bad_evals=0)
                        best_weights = {k: v.detach().clone() for k, v in
                                        model.state_dict().items()}
                    else:
                        state["bad_evals"] += 1
                        stopped_early = state["bad_evals"] >= train.patience
                if step % train.checkpoint_every == 0 or step == total or stopped_early:
                    save_checkpoint(checkpoint, {
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if device == "cuda" else [],
                        "best_weights": best_weights, "progress": state})
                if stop_after is not None and step >= stop_after:
                    raise TrainingInterrupted(f"stopped after step {step} (checkpoint kept)")
                if step >= total or stopped_early:
                    break
    seconds = time.perf_counter() - started
    if best_weights is not None and state["best_step"] != state["step"]:
        model.load_state_dict(best_weights)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    losses = state["losses"]
    tail = losses[-max(1, len(losses) // 10):] or [float("nan")]
    trained_steps = state["step"] - resumed_from
    return FinetuneResult(
        model_dir=str(out_dir), device=device, steps=state["step"], train_rows=len(examples),
        train_loss=sum(tail) / len(tail), best_validation_macro_f1=state["best"],
        stopped_early=stopped_early, resumed_from=resumed_from, seconds=seconds,
        samples_per_second=trained_steps * budget.batch_size / seconds if seconds else 0.0,
        params={"model_path": train.resolved_model_path(), "device": device,
                "max_length": budget.max_length, "batch_size": budget.batch_size,
                "learning_rate": budget.learning_rate, "steps": state["step"],
                "epochs": train.epochs, "seed": train.seed, "bf16": budget.bf16,
                "fused_adamw": budget.fused_adamw, "compile": budget.compile,
                "class_weights": weights is not None, "best_step": state["best_step"]},
    )


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state.pt`` atomically: a kill while saving leaves the previous checkpoint intact."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "state.pt.partial"
    torch.save(state, partial)
    os.replace(partial, folder / "state.pt")


def training_digest(train: TrainConfig) -> str:
    """A short digest of the training settings: another model or budget is another model."""
    return hashlib.sha256(train.model_dump_json().encode()).hexdigest()[:8]


def model_dir(config: Config, snapshot: SnapshotResult) -> Path:
    """Where the model trained on a snapshot with this training config is kept."""
    return (Lake.at(config.lake_path).root / "models"
            / f"{snapshot.digest[:16]}-{training_digest(config.train)}")


def training_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache key of a training: lake, snapshot digest and training config, once the model exists.

    A retried or re-run flow that reaches ``finetune`` with the same inputs reuses the model
    instead of training again. Without a saved model there is no key (None: never cached), so a
    deleted model folder or a new lake trains anew, resuming from a checkpoint if one is left.
    """
    config, snapshot = parameters["config"], parameters["snapshot"]
    folder = model_dir(config, snapshot)
    if not (folder / "config.json").is_file():
        return None
    return f"finetune-{Lake.at(config.lake_path).id}-{folder.name}"


@task(name="finetune", cache_key_fn=training_cache_key, persist_result=True, retries=1)
def finetune(config: Config, snapshot: SnapshotResult) -> FinetuneResult:
    """Prefect task: fine-tune on the validated snapshot's train split (resumes on retry)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    progress = create_progress_artifact(0.0, key="finegate-training",
                                        description="Fine-tuning progress (% of steps)")

    def report(step: int, total: int, loss: float) -> None:
        update_progress_artifact(progress, 100 * step / total,
                                 description=f"step {step}/{total}, loss {loss:.3f}")

    return train_classifier(snapshot.data_path, config.labels, config.train,
                            model_dir(config, snapshot), on_progress=report)
