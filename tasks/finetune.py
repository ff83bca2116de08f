"""Finetune: a sequence classifier on the snapshot's train split, in one short loop.

Model: ``AutoModelForSequenceClassification`` from a local folder (no hub access), SDPA attention.
Data: dynamic padding to a multiple of 8, length-grouped batches, class weights when the train
split is imbalanced. Loop: AdamW (fused on CUDA), linear warm-up/decay, bf16 autocast on CUDA,
optional ``torch.compile``, validation macro-F1 every ``eval_every`` steps with early stopping
(the best weights are kept), and a checkpoint every ``checkpoint_every`` steps that a killed run
resumes from, reproducing the uninterrupted run. CPU runs use the bounded ``cpu_*`` budget
(``finegate.core.device``). Augmentation (``train.augment``, ``finegate.core.augment``): minority
copies, optionally perturbed, are added to the train rows in memory (never to validation, test
or the snapshot), and mixup mixes the classifier head's input and the labels within a batch.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finegate.core.augment import augment_train_rows, mixup_draw
from finegate.core.config import AugmentConfig, TrainConfig
from finegate.core.device import Budget, budget_for, pick_device
from finegate.core.inference import read_split
from finegate.core.results import FinetuneResult

ProgressCallback = Callable[[int, int, float], None]  # (step, total steps, loss)
VALIDATION_BATCH = 64


def train(data_path: str, labels: list[str], settings: TrainConfig, out_dir: Path, *,
          on_progress: ProgressCallback | None = None, budget: Budget | None = None,
          ) -> FinetuneResult:
    """Fine-tune on the snapshot's train split; save the best model and tokenizer to ``out_dir``.

    Resumes from ``out_dir/checkpoint`` when a killed run left one. ``on_progress(step, total,
    loss)`` is called about every 5% of the steps, at the last step and after every checkpoint;
    an exception raised from it stops the run with that checkpoint kept.
    """
    import torch
    from tqdm.auto import tqdm

    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    budget = budget or device_budget(settings)
    device = budget.device
    tokenizer, model = load_model(settings.resolved_model_path(), labels)
    data = prepare_data(data_path, labels, tokenizer, budget.max_length, settings.augment,
                        settings.seed)
    total = total_steps(len(data.examples), budget.batch_size, settings.epochs, budget.max_steps)
    loss_fn = weighted_loss(class_weights(data.label_names(labels), labels, settings.imbalance),
                            device)
    model.to(device).train()
    optimizer, schedule = build_optimizer(model, settings, budget, total)
    forward = torch.compile(model) if budget.compile else model
    mixup = Mixup(settings.augment.mixup_alpha, settings.seed) if settings.augment.mixup_alpha \
        else None

    checkpoint = out_dir / "checkpoint" / "state.pt"
    step, best_score, best_step, bad_evals, losses, best_weights = 0, None, 0, 0, [], None
    if checkpoint.is_file():  # a killed run left one: go on from there
        saved = restore_checkpoint(checkpoint, model, optimizer, schedule, device)
        step, best_score, best_step = saved["step"], saved["best_score"], saved["best_step"]
        bad_evals, losses, best_weights = saved["bad_evals"], saved["losses"], saved["best_weights"]
    resumed_from, stopped_early, report_every = step, False, max(1, total // 20)
    batches = batches_from(step, data.lengths, budget.batch_size, settings.seed)
    started = time.perf_counter()
    with tqdm(total=total, initial=step, desc=f"finetune ({device})", unit="step") as bar, \
            mixup_head(model, mixup):
        while step < total and not stopped_early:
            batch = data.collate_rows(next(batches))
            losses.append(train_step(forward, model, batch, loss_fn, optimizer, schedule, budget,
                                     mixup.at(step, len(batch["labels"])) if mixup else None))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if data.validation and (step % budget.eval_every == 0 or step == total):
                score = macro_f1(model, data.validation, budget)
                if best_score is None or score > best_score:
                    best_score, best_step, bad_evals = score, step, 0
                    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_evals += 1
                    stopped_early = bad_evals >= settings.patience
            saving = step % settings.checkpoint_every == 0 or step == total or stopped_early
            if saving:
                save_checkpoint(checkpoint, model, optimizer, schedule, device, step=step,
                                best_score=best_score, best_step=best_step, bad_evals=bad_evals,
                                losses=losses, best_weights=best_weights)
            if on_progress and (saving or step % report_every == 0):
                on_progress(step, total, losses[-1])
    seconds = time.perf_counter() - started
    save_model(model, tokenizer, out_dir, best_weights if best_step != step else None)
    return FinetuneResult(
        model_dir=str(out_dir), device=device, steps=step,
        train_rows=len(data.examples) - data.augmented_rows,
        train_loss=recent_loss(losses), best_validation_macro_f1=best_score,
        stopped_early=stopped_early, resumed_from=resumed_from, seconds=seconds,
        samples_per_second=(step - resumed_from) * budget.batch_size / seconds if seconds else 0.0,
        params=training_params(settings, budget, steps=step, best_step=best_step,
                               class_weighted=loss_fn.weight is not None,
                               augmented_rows=data.augmented_rows))


def device_budget(settings: TrainConfig) -> Budget:
    """The configured device (all the cores this process may use on CPU) and its budget."""
    import torch

    device = pick_device(settings.device)
    if device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    return budget_for(settings, device, device == "cuda" and torch.cuda.is_bf16_supported())


def load_model(model_path: str, labels: list[str]) -> tuple[Any, Any]:
    """Tokenizer and a fresh classification head on the local encoder in ``model_path``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, attn_implementation="sdpa",
    )
    return tokenizer, model


@dataclass(frozen=True)
class TrainingData:
    """The tokenised train rows (augmented rows last), the validation rows collated once, and
    the collator."""

    examples: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    augmented_rows: int = 0

    @property
    def lengths(self) -> list[int]:
        """Tokens per train row."""
        return [len(e["input_ids"]) for e in self.examples]

    def label_names(self, labels: list[str]) -> list[str]:
        """The label of every train row."""
        return [labels[e["labels"]] for e in self.examples]

    def collate_rows(self, indices: list[int]) -> dict[str, Any]:
        """One padded batch of train rows."""
        return self.collate([self.examples[i] for i in indices])


def prepare_data(data_path: str, labels: list[str], tokenizer: Any, max_length: int,
                 augment: AugmentConfig | None = None, seed: int = 0) -> TrainingData:
    """Tokenise the train and validation splits (truncated to ``max_length``); ``augment``
    adds its rows to the train split only."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    label_id = {label: i for i, label in enumerate(labels)}

    def encode(texts: list[str], names: list[str]) -> list[dict[str, Any]]:
        if not texts:
            return []
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": label_id[n]}
                for i, m, n in zip(enc["input_ids"], enc["attention_mask"], names, strict=True)]

    validation = encode(*read_split(data_path, "validation"))
    texts, names = read_split(data_path, "train")
    added = 0
    if augment is not None and augment.upsample_to and texts:
        rows = augment_train_rows(texts, names, augment, seed)
        texts, names, added = rows.texts, rows.labels, rows.added
    return TrainingData(encode(texts, names),
                        [collate(validation[i:i + VALIDATION_BATCH])
                         for i in range(0, len(validation), VALIDATION_BATCH)], collate, added)


def total_steps(rows: int, batch_size: int, epochs: float, max_steps: int) -> int:
    """Optimiser steps of a run: ``epochs`` passes over ``rows``, capped at ``max_steps``
    (0: no cap)."""
    total = math.ceil(math.ceil(rows / batch_size) * epochs)
    return min(total, max_steps) if max_steps else total


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


def batches_from(step: int, lengths: list[int], batch_size: int, seed: int,
                 ) -> Iterator[list[int]]:
    """Row indices of every batch from ``step`` on, epoch after epoch (epoch ``e`` shuffled with
    ``seed + e``): a resumed run sees exactly the batches of the uninterrupted one."""
    epoch, offset = divmod(step, math.ceil(len(lengths) / batch_size))
    while True:
        yield from length_grouped_batches(lengths, batch_size, seed + epoch)[offset:]
        epoch, offset = epoch + 1, 0


def class_weights(names: list[str], labels: list[str], imbalance: float) -> list[float] | None:
    """``N / (C * n_c)`` per class when the largest class is ``imbalance``× the smallest."""
    counts = Counter(names)
    present = [counts.get(label, 0) for label in labels]
    if min(present) == 0 or max(present) / min(present) < imbalance:
        return None
    return [len(names) / (len(labels) * n) for n in present]


def weighted_loss(weights: list[float] | None, device: str) -> Any:
    """Cross-entropy, weighted per class when ``weights`` are given."""
    import torch

    return torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, device=device) if weights else None)


def build_optimizer(model: Any, settings: TrainConfig, budget: Budget,
                    total: int) -> tuple[Any, Any]:
    """AdamW (fused on CUDA) and a linear warm-up/decay schedule over ``total`` steps."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=budget.learning_rate,
                                  weight_decay=settings.weight_decay, fused=budget.fused_adamw)
    warmup = int(settings.warmup_ratio * total)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total)


class Mixup:
    """Mixup of the classifier head's input (the pooled sentence embedding) within a batch:
    ``lam * x + (1 - lam) * x[partner]``, and of the loss, ``lam * loss(y) + (1 - lam) *
    loss(y[partner])``; lambda and the partners are drawn per step from ``(seed, step)``."""

    def __init__(self, alpha: float, seed: int) -> None:
        self.alpha, self.seed = alpha, seed
        self.lam: float | None = None  # set while a training step runs, None otherwise
        self.partners: Any = None

    def at(self, step: int, rows: int) -> Mixup:
        """This step's draw."""
        import torch

        lam, partners = mixup_draw(self.seed, step, rows, self.alpha)
        self.lam, self.partners = lam, torch.tensor(partners)
        return self

    def mix(self, _module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Forward pre-hook of the head: mixes its input during a training step only."""
        if self.lam is None:
            return None
        x = args[0]
        return (self.lam * x + (1 - self.lam) * x[self.partners.to(x.device)], *args[1:])


@contextmanager
def mixup_head(model: Any, mixup: Mixup | None) -> Iterator[None]:
    """Mixup's hook on the model's classification head while the block runs."""
    if mixup is None:
        yield
        return
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    if head is None:
        raise ValueError(f"train.augment.mixup_alpha needs the classification head of "
                         f"{type(model).__name__} (a 'classifier' or 'score' module); set it to 0")
    handle = head.register_forward_pre_hook(mixup.mix)
    try:
        yield
    finally:
        handle.remove()


def train_step(forward: Any, model: Any, batch: dict[str, Any], loss_fn: Any, optimizer: Any,
               schedule: Any, budget: Budget, mixup: Mixup | None = None) -> float:
    """One optimiser step on a padded batch (mixed when ``mixup`` holds a draw); returns its
    loss."""
    import torch

    inputs = {k: v.to(budget.device) for k, v in batch.items()}
    target = inputs.pop("labels")
    with torch.autocast(budget.device, torch.bfloat16, enabled=budget.bf16):
        if mixup is None:
            loss = loss_fn(forward(**inputs).logits.float(), target)
        else:
            logits = forward(**inputs).logits.float()
            partner = target[mixup.partners.to(target.device)]
            loss = mixup.lam * loss_fn(logits, target) + (1 - mixup.lam) * loss_fn(logits,
                                                                                   partner)
            mixup.lam = None  # validation in between steps sees the head unmixed
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def macro_f1(model: Any, batches: list[dict[str, Any]], budget: Budget) -> float:
    """Macro-F1 of ``model`` on pre-collated validation batches."""
    import torch
    from sklearn.metrics import f1_score

    model.eval()
    truth, predicted = [], []
    with torch.inference_mode(), torch.autocast(budget.device, torch.bfloat16,
                                                enabled=budget.bf16):
        for batch in batches:
            inputs = {k: v.to(budget.device) for k, v in batch.items() if k != "labels"}
            predicted += model(**inputs).logits.argmax(-1).tolist()
            truth += batch["labels"].tolist()
    model.train()
    return float(f1_score(truth, predicted, average="macro")) if truth else 0.0


def save_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any, device: str,
                    **progress: Any) -> None:
    """Write the checkpoint atomically: a kill while saving leaves the previous one intact.

    ``progress`` is the loop's named state (step, best score, losses, ...); with the weights,
    optimiser, schedule and RNG states it is all a resumed run needs to repeat the same steps.
    """
    import torch

    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "schedule": schedule.state_dict(), "rng": torch.get_rng_state(),
                  "cuda_rng": torch.cuda.get_rng_state_all() if device == "cuda" else [],
                  **progress}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def restore_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any,
                       device: str) -> dict[str, Any]:
    """Load weights, optimiser, schedule and RNG states from ``path``; returns the checkpoint
    (its progress entries are the loop's state at that step)."""
    import torch

    checkpoint = torch.load(path, weights_only=True)
    if "step" not in checkpoint:
        raise ValueError(f"the checkpoint {path} was written by an older Finegate and cannot be "
                         "resumed; delete its folder to train this model from the start")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["schedule"])
    torch.set_rng_state(checkpoint["rng"])
    if device == "cuda" and checkpoint["cuda_rng"]:
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    return checkpoint


def save_model(model: Any, tokenizer: Any, out_dir: Path,
               best_weights: dict[str, Any] | None) -> None:
    """Save tokenizer and model to ``out_dir``, with ``best_weights`` when the run went on past
    its best validation score (early stopping keeps the best model, not the last)."""
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def recent_loss(losses: list[float]) -> float:
    """Mean training loss over the last 10% of the steps (NaN without steps)."""
    tail = losses[-max(1, len(losses) // 10):] or [float("nan")]
    return sum(tail) / len(tail)


def training_params(settings: TrainConfig, budget: Budget, *, steps: int, best_step: int,
                    class_weighted: bool, augmented_rows: int = 0) -> dict[str, Any]:
    """The settings a run actually trained with (logged to MLflow and the model card)."""
    return {"model_path": settings.resolved_model_path(), "device": budget.device,
            "max_length": budget.max_length, "batch_size": budget.batch_size,
            "learning_rate": budget.learning_rate, "steps": steps, "epochs": settings.epochs,
            "seed": settings.seed, "bf16": budget.bf16, "fused_adamw": budget.fused_adamw,
            "compile": budget.compile, "class_weights": class_weighted, "best_step": best_step,
            "augment_upsample_to": settings.augment.upsample_to,
            "augment_perturb": settings.augment.perturb,
            "augment_perturb_rate": settings.augment.perturb_rate,
            "augment_mixup_alpha": settings.augment.mixup_alpha,
            "augmented_rows": augmented_rows}
