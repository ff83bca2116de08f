"""Evaluate: the fine-tuned model on the snapshot's test split and on the fixed golden set.

Both get accuracy, macro-F1, per-class precision/recall/F1, a confusion matrix (JSON and PNG)
and the misclassified examples. The golden set (``evaluation.golden_path``: JSONL, CSV or
Parquet with ``text`` and ``label``) lives outside the landing zone, so nightly data never
overwrites it; it is what champion and challenger are compared on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from finegate.config import Config
from finegate.lake import read_json, write_json
from tasks.clean import label_key, label_lookup, normalise_text
from tasks.finetune import pick_device, read_split

MISCLASSIFIED_SHOWN = 50


@dataclass(frozen=True)
class EvaluationResult:
    """Headline metrics and where the full report is."""

    accuracy: float
    macro_f1: float
    test_rows: int
    report_path: str
    golden_macro_f1: float | None = None
    golden_rows: int = 0


def read_golden(path: str | Path, labels: list[str], aliases: dict[str, str],
                ) -> tuple[list[str], list[str]]:
    """Texts and canonical labels of the golden set (cleaned like the nightly data)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden set {path} does not exist; set evaluation.golden_path "
                                "to a JSONL, CSV or Parquet file with text and label, or leave "
                                "it empty")
    readers = {".jsonl": lambda p: pd.read_json(p, lines=True), ".csv": pd.read_csv,
               ".parquet": pd.read_parquet}
    frame = readers[path.suffix.lower()](path)
    lookup = label_lookup(labels, aliases)
    names = [lookup.get(label_key(str(label))) for label in frame["label"]]
    unknown = sorted({str(v) for v, n in zip(frame["label"], names, strict=True) if n is None})
    if unknown:
        raise ValueError(f"golden set {path} has labels outside the label set: {unknown}")
    return [normalise_text(str(t)) for t in frame["text"]], names


def predict(model_dir: str | Path, texts: list[str], max_length: int, device: str,
            batch_size: int = 64, tokenizer_dir: str | Path | None = None) -> list[str]:
    """Predicted label names for ``texts`` with the model saved in ``model_dir``."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    predicted: list[str] = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="predict", unit="batch"):
            inputs = tokenizer(texts[start:start + batch_size], truncation=True, padding=True,
                               max_length=max_length, return_tensors="pt").to(device)
            ids = model(**inputs).logits.argmax(dim=-1).tolist()
            predicted += [model.config.id2label[i] for i in ids]
    return predicted


def classification_metrics(truth: list[str], predicted: list[str],
                           labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the configured labels, per-class report and confusion matrix."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    if not truth:
        return {"accuracy": 0.0, "macro_f1": 0.0, "per_class": {}, "rows": 0,
                "confusion_matrix": {"labels": labels, "matrix": []}}
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro",
                                   zero_division=0)),
        "per_class": classification_report(truth, predicted, labels=labels, output_dict=True,
                                           zero_division=0),
        "confusion_matrix": {"labels": labels,
                             "matrix": confusion_matrix(truth, predicted, labels=labels).tolist()},
        "rows": len(truth),
    }


def misclassified(texts: list[str], truth: list[str], predicted: list[str]) -> list[dict]:
    """The first misclassified examples (text shortened) for the report."""
    wrong = [{"text": t[:300], "label": y, "predicted": p}
             for t, y, p in zip(texts, truth, predicted, strict=True) if y != p]
    return wrong[:MISCLASSIFIED_SHOWN]


def confusion_png(metrics: dict[str, Any], title: str, path: Path) -> Path:
    """Draw the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = metrics["confusion_matrix"]["labels"], metrics["confusion_matrix"]["matrix"]
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    axes.imshow(matrix or [[0]], cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, str(value), ha="center", va="center")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def evaluate_set(model_dir: str, texts: list[str], truth: list[str], config: Config,
                 name: str, out_dir: Path) -> dict[str, Any]:
    """Metrics, predictions, misclassified examples and confusion PNG of one evaluation set."""
    device = pick_device(config.train.device)
    max_length = config.train.cpu_max_length if device == "cpu" else config.train.max_length
    predicted = predict(model_dir, texts, max_length, device) if texts else []
    metrics = classification_metrics(truth, predicted, config.labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = confusion_png(metrics, f"{name} confusion matrix", out_dir / f"confusion_{name}.png")
    return {**metrics, "predictions": predicted, "truth": truth,
            "misclassified": misclassified(texts, truth, predicted), "confusion_png": str(png)}


def evaluate_model(model_dir: str, data_path: str, config: Config, out_dir: Path,
                   ) -> EvaluationResult:
    """Score the model on the test split and the golden set; write ``evaluation.json``."""
    texts, truth = read_split(data_path, "test")
    report = {"test": {**evaluate_set(model_dir, texts, truth, config, "test", out_dir),
                       "data_path": data_path}}
    if config.evaluation.golden_path:
        golden_texts, golden_truth = read_golden(config.evaluation.golden_path, config.labels,
                                                 config.label_aliases)
        report["golden"] = evaluate_set(model_dir, golden_texts, golden_truth, config, "golden",
                                        out_dir)
    path = write_json(out_dir / "evaluation.json", report)
    golden = report.get("golden")
    return EvaluationResult(accuracy=report["test"]["accuracy"],
                            macro_f1=report["test"]["macro_f1"], test_rows=len(truth),
                            report_path=str(path),
                            golden_macro_f1=golden["macro_f1"] if golden else None,
                            golden_rows=golden["rows"] if golden else 0)


@task(name="evaluate")
def evaluate(config: Config, model_dir: str, data_path: str, run_dir: str) -> EvaluationResult:
    """Prefect task: test-split and golden-set metrics, also as a table artifact."""
    from prefect.artifacts import create_table_artifact

    result = evaluate_model(model_dir, data_path, config, Path(run_dir))
    report = read_json(Path(result.report_path))
    rows = [{"set": name, "class": label, **{k: round(v, 4) for k, v in row.items()}}
            for name, part in report.items()
            for label, row in part["per_class"].items() if isinstance(row, dict)
            if isinstance(part, dict)]
    golden = f", golden macro-F1 {result.golden_macro_f1:.3f}" if result.golden_rows else ""
    create_table_artifact(key="finegate-evaluation", table=rows,
                          description=f"Test accuracy {result.accuracy:.3f}, macro-F1 "
                                      f"{result.macro_f1:.3f}{golden}")
    return result
