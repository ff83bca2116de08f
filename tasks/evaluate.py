"""Evaluate: the fine-tuned model on the snapshot's test split and on the fixed golden set.

Both get accuracy, macro-F1, per-class precision/recall/F1, a confusion matrix (JSON and PNG)
and the misclassified examples. The golden set (``evaluation.golden_path``: JSONL, CSV or
Parquet with ``text`` and ``label``) lives outside the landing zone, so nightly data never
overwrites it; it is what champion and challenger are compared on. Under the ``time`` split
strategy, ``freshness.json`` adds the score on the newest drops (test) against held-out rows of
the older drops (validation) and the drift between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from finegate.core.config import EvaluationConfig, LabelSet, TrainConfig
from finegate.core.device import eval_max_length, pick_device
from finegate.core.inference import predict, read_golden, read_split
from finegate.core.lake import read_json, write_json
from finegate.core.results import EvaluationResult

MISCLASSIFIED_SHOWN = 50


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


def evaluate_set(model_dir: str, texts: list[str], truth: list[str], labels: list[str],
                 name: str, out_dir: Path, *, max_length: int, device: str) -> dict[str, Any]:
    """Metrics, predictions, misclassified examples and confusion PNG of one evaluation set."""
    predicted = predict(model_dir, texts, max_length, device)
    metrics = classification_metrics(truth, predicted, labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = confusion_png(metrics, f"{name} confusion matrix", out_dir / f"confusion_{name}.png")
    return {**metrics, "predictions": predicted, "truth": truth,
            "misclassified": misclassified(texts, truth, predicted), "confusion_png": str(png)}


def evaluate_model(model_dir: str, data_path: str, out_dir: Path, *, label_set: LabelSet,
                   train: TrainConfig, evaluation: EvaluationConfig,
                   leaked_golden: list[int] | None = None) -> EvaluationResult:
    """Score the model on the test split and the golden set; write ``evaluation.json``.

    The model is scored on the device and at the sequence length it was trained with. Golden
    rows found in the snapshot (``leaked_golden``, from the leakage check) are left out of the
    golden metric, so promotion is never decided on a leaked row; the score with them is kept
    beside it (``golden.with_leaked_rows``) to show what they would have changed.
    """
    device = pick_device(train.device)
    max_length, labels = eval_max_length(train, device), list(label_set.labels)
    texts, truth = read_split(data_path, "test")
    rows = test_rows_scored(len(texts), evaluation.cpu_max_test_rows if device == "cpu" else None)
    report = {"test": {**evaluate_set(model_dir, [texts[i] for i in rows],
                                      [truth[i] for i in rows], labels, "test", out_dir,
                                      max_length=max_length, device=device),
                       "data_path": data_path, "split_rows": len(texts)}}
    if len(rows) < len(texts):
        report["test"]["rows_scored"] = rows
    split_plan = read_json(Path(data_path).parent / "manifest.json").get("split", {}) \
        if (Path(data_path).parent / "manifest.json").is_file() else {}
    if split_plan.get("test_drops"):  # the time strategy: the newest drops against the older
        write_json(out_dir / "freshness.json", freshness(
            model_dir, data_path, report["test"], split_plan, labels, max_length=max_length,
            device=device, cap=evaluation.cpu_max_test_rows if device == "cpu" else None))
    if evaluation.golden_path:
        golden_texts, golden_truth = read_golden(evaluation.golden_path, label_set)
        leaked = sorted(set(leaked_golden or []))
        keep = [i for i in range(len(golden_texts)) if i not in set(leaked)]
        report["golden"] = {**evaluate_set(
            model_dir, [golden_texts[i] for i in keep], [golden_truth[i] for i in keep], labels,
            "golden", out_dir, max_length=max_length, device=device), "excluded_rows": leaked}
        if leaked:  # what the leaked rows would have made of the score
            report["golden"]["with_leaked_rows"] = with_leaked_rows(
                report["golden"], keep, leaked, golden_truth, labels,
                predict(model_dir, [golden_texts[i] for i in leaked], max_length, device))
    path = write_json(out_dir / "evaluation.json", report)
    golden = report.get("golden")
    return EvaluationResult(accuracy=report["test"]["accuracy"],
                            macro_f1=report["test"]["macro_f1"], test_rows=report["test"]["rows"],
                            report_path=str(path),
                            golden_macro_f1=golden["macro_f1"] if golden else None,
                            golden_rows=golden["rows"] if golden else 0)


def freshness(model_dir: str, data_path: str, test: dict[str, Any], split_plan: dict[str, Any],
              labels: list[str], *, max_length: int, device: str, cap: int | None,
              ) -> dict[str, Any]:
    """Under ``time``: the score on the newest drops (the test split) against the score on
    held-out rows of the older drops (the validation split), and the drift between them."""
    from finegate.core.drift import rows_drift

    texts, truth = read_split(data_path, "validation")
    rows = test_rows_scored(len(texts), cap)
    predicted = predict(model_dir, [texts[i] for i in rows], max_length, device)
    older = classification_metrics([truth[i] for i in rows], predicted, labels)
    data = pq.read_table(data_path, columns=["text", "label", "split"]).to_pandas()
    newest = data.loc[data["split"] == "test"]
    return {"newest_drops": split_plan["test_drops"],
            "newest": {k: test[k] for k in ("accuracy", "macro_f1", "rows")},
            "older": {"split": "validation", "drops": split_plan.get("validation_drops") or
                      "held out of the older drops by hash",
                      **{k: older[k] for k in ("accuracy", "macro_f1", "rows")}},
            "macro_f1_change": test["macro_f1"] - older["macro_f1"],
            "drift": {"against_train": rows_drift(newest, data.loc[data["split"] == "train"]),
                      "against_validation": rows_drift(
                          newest, data.loc[data["split"] == "validation"])}}


def test_rows_scored(split_rows: int, cap: int | None) -> list[int]:
    """The test rows scored: all of them, or ``cap`` rows evenly spaced over the split."""
    if cap is None or split_rows <= cap:
        return list(range(split_rows))
    return sorted({round(i * (split_rows - 1) / (cap - 1)) for i in range(cap)})


def with_leaked_rows(golden: dict[str, Any], keep: list[int], leaked: list[int],
                     truth: list[str], labels: list[str], leaked_predictions: list[str],
                     ) -> dict[str, Any]:
    """Accuracy and macro-F1 over the whole golden set, leaked rows included."""
    predicted = dict(zip(keep, golden["predictions"], strict=True))
    predicted.update(zip(leaked, leaked_predictions, strict=True))
    rows = sorted(predicted)
    metrics = classification_metrics([truth[i] for i in rows], [predicted[i] for i in rows],
                                     labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "rows": len(rows),
            "leaked_rows": len(leaked)}


def per_class_rows(report_path: str | Path) -> list[dict[str, Any]]:
    """One row per evaluation set and class (precision, recall, F1, support), for a table."""
    report = read_json(Path(report_path))
    return [{"set": name, "class": label, **{k: round(v, 4) for k, v in row.items()}}
            for name, part in report.items() if isinstance(part, dict)
            for label, row in part["per_class"].items() if isinstance(row, dict)]


def headline(result: EvaluationResult) -> str:
    """The evaluation in one line: test accuracy and macro-F1, and golden macro-F1 if any."""
    golden = f", golden macro-F1 {result.golden_macro_f1:.3f}" if result.golden_rows else ""
    return f"Test accuracy {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}{golden}"
