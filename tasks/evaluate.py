"""Evaluate: accuracy, macro-F1 and a per-class report of the fine-tuned model on the test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task

from finegate.config import Config
from finegate.lake import read_json, write_json
from tasks.finetune import pick_device, read_split


@dataclass(frozen=True)
class EvaluationResult:
    """Headline test metrics and where the full report is."""

    accuracy: float
    macro_f1: float
    test_rows: int
    report_path: str


def predict(model_dir: str | Path, texts: list[str], max_length: int, device: str,
            batch_size: int = 64) -> list[str]:
    """Predicted label names for ``texts`` with the model saved in ``model_dir``."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    predicted: list[str] = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="evaluate", unit="batch"):
            inputs = tokenizer(texts[start:start + batch_size], truncation=True, padding=True,
                               max_length=max_length, return_tensors="pt").to(device)
            ids = model(**inputs).logits.argmax(dim=-1).tolist()
            predicted += [model.config.id2label[i] for i in ids]
    return predicted


def classification_metrics(truth: list[str], predicted: list[str],
                           labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the configured labels, per-class report and confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
    )

    return {
        "accuracy": float(accuracy_score(truth, predicted)) if truth else 0.0,
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro",
                                   zero_division=0)) if truth else 0.0,
        "per_class": classification_report(truth, predicted, labels=labels, output_dict=True,
                                           zero_division=0) if truth else {},
        "confusion_matrix": {"labels": labels,
                             "matrix": confusion_matrix(truth, predicted, labels=labels).tolist()
                             if truth else []},
        "rows": len(truth),
    }


def evaluate_model(model_dir: str, data_path: str, config: Config, out_dir: Path,
                   ) -> EvaluationResult:
    """Score the model on the snapshot's test split; write ``evaluation.json``."""
    texts, truth = read_split(data_path, "test")
    device = pick_device(config.train.device)
    max_length = config.train.cpu_max_length if device == "cpu" else config.train.max_length
    metrics = classification_metrics(truth, predict(model_dir, texts, max_length, device),
                                     config.labels)
    path = write_json(out_dir / "evaluation.json", metrics)
    return EvaluationResult(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
                            test_rows=len(truth), report_path=str(path))


@task(name="evaluate")
def evaluate(config: Config, model_dir: str, data_path: str, run_dir: str) -> EvaluationResult:
    """Prefect task: test-split metrics of the fine-tuned model, also as a table artifact."""
    from prefect.artifacts import create_table_artifact

    result = evaluate_model(model_dir, data_path, config, Path(run_dir))
    report = read_json(Path(result.report_path))["per_class"]
    create_table_artifact(
        key="finegate-evaluation",
        description=f"Test split: accuracy {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}",
        table=[{"class": name, **{k: round(v, 4) for k, v in row.items()}}
               for name, row in report.items() if isinstance(row, dict)])
    return result
