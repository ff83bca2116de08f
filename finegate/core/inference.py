"""Inference: load a saved classifier, predict labels, read the rows a model is scored on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import LabelSet
from finegate.core.text import label_key, label_lookup, normalise_text


def load_classifier(model_dir: str | Path, device: str,
                    tokenizer_dir: str | Path | None = None) -> tuple[Any, Any]:
    """Tokenizer and classifier saved in ``model_dir``, the model in eval mode on ``device``.

    A model registered with MLflow keeps its tokenizer apart (``tokenizer_dir``).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    return tokenizer, model


def predict(model_dir: str | Path, texts: list[str], max_length: int, device: str,
            batch_size: int = 64, tokenizer_dir: str | Path | None = None) -> list[str]:
    """Predicted label names for ``texts``, in their order, with the model in ``model_dir``.

    Texts are batched by token length, so a batch pads to its own longest text, not to the
    longest of a random mix.
    """
    import torch
    from tqdm.auto import tqdm

    if not texts:
        return []
    tokenizer, model = load_classifier(model_dir, device, tokenizer_dir)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    predicted = [""] * len(texts)
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="predict", unit="batch"):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({key: [values[i] for i in rows]
                                   for key, values in encoded.items()}, return_tensors="pt")
            ids = model(**batch.to(device)).logits.argmax(dim=-1).tolist()
            for row, label_id in zip(rows, ids, strict=True):
                predicted[row] = model.config.id2label[label_id]
    return predicted


def predict_probabilities(model_dir: str | Path, texts: list[str], labels: list[str],
                          max_length: int, device: str, batch_size: int = 64,
                          tokenizer_dir: str | Path | None = None) -> np.ndarray:
    """Class probabilities ``(len(texts), len(labels))`` for ``texts`` with the model in
    ``model_dir``; columns in the order of ``labels`` (a label the model lacks gets 0)."""
    import torch
    from tqdm.auto import tqdm

    probabilities = np.zeros((len(texts), len(labels)))
    if not texts:
        return probabilities
    tokenizer, model = load_classifier(model_dir, device, tokenizer_dir)
    column = {label: n for n, label in enumerate(labels)}
    known = [(i, column[name]) for i, name in model.config.id2label.items() if name in column]
    if not known:
        raise ValueError(f"model {model_dir} predicts {sorted(model.config.id2label.values())}"
                         f", none of the configured labels {labels}")
    model_ids, columns = (list(v) for v in zip(*known, strict=True))
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="score", unit="batch"):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({key: [values[i] for i in rows]
                                   for key, values in encoded.items()}, return_tensors="pt")
            soft = model(**batch.to(device)).logits.softmax(dim=-1).cpu().numpy()
            probabilities[np.ix_(rows, columns)] = soft[:, model_ids]
    return probabilities


def read_split(data_path: str | Path, split: str) -> tuple[list[str], list[str]]:
    """Texts and labels of one split of a snapshot, in a stable order (by id)."""
    table = pq.read_table(data_path, columns=["id", "text", "label", "split"]).to_pandas()
    rows = table.loc[table["split"] == split].sort_values("id")
    return rows["text"].tolist(), rows["label"].tolist()


GOLDEN_READERS = {".jsonl": lambda p: pd.read_json(p, lines=True), ".csv": pd.read_csv,
                  ".parquet": pd.read_parquet}


def read_golden(path: str | Path, label_set: LabelSet) -> tuple[list[str], list[str]]:
    """Texts and canonical labels of the golden set (cleaned like the nightly data)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden set {path} does not exist; set evaluation.golden_path "
                                "to a JSONL, CSV or Parquet file with text and label, or leave "
                                "it empty")
    reader = GOLDEN_READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"golden set {path} is not JSONL, CSV or Parquet; convert it to one "
                         "of them (.jsonl, .csv, .parquet) with text and label columns")
    frame = reader(path)
    lookup = label_lookup(label_set)
    names = [lookup.get(label_key(str(label))) for label in frame["label"]]
    unknown = sorted({str(v) for v, n in zip(frame["label"], names, strict=True) if n is None})
    if unknown:
        raise ValueError(f"golden set {path} has labels outside the label set: {unknown}")
    return [normalise_text(str(t)) for t in frame["text"]], names
