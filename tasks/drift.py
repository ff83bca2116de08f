"""Drift: how a snapshot differs from the previous one, and its newest drop from the history.

Comparators in the spirit of TFX's skew/drift checks: L-infinity distance between label shares,
Jensen-Shannon distance between text-length histograms, relative change of the median length,
and the out-of-vocabulary rate of new rows against the previous snapshot's vocabulary. The
thresholds live in ``expectations/curated_drift.json``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

_WORD = re.compile(r"\w+")


def label_shares(labels: pd.Series) -> dict[str, float]:
    """Share of rows per label."""
    return {str(k): float(v) for k, v in labels.value_counts(normalize=True).items()}


def linf_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Largest absolute difference in share over all labels (TFX's L-infinity comparator)."""
    return max((abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in a.keys() | b.keys()), default=0.0)


def length_distance(new: pd.Series, old: pd.Series, bins: int = 10) -> float:
    """Jensen-Shannon distance of word-count histograms, binned on the old data's deciles."""
    from scipy.spatial.distance import jensenshannon

    if new.empty or old.empty:
        return 0.0
    edges = np.unique(np.quantile(old, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    if len(edges) < 3:
        return 0.0 if new.median() == old.median() else 1.0
    hist_new = np.histogram(new, edges)[0] + 1e-9
    hist_old = np.histogram(old, edges)[0] + 1e-9
    return float(jensenshannon(hist_new, hist_old, base=2))


def vocabulary(texts: pd.Series) -> set[str]:
    """Case-folded words of the texts."""
    return {w for t in texts for w in _WORD.findall(t.casefold())}


def oov_rate(new_texts: pd.Series, known: set[str]) -> float:
    """Share of word tokens in ``new_texts`` that are not in ``known``."""
    tokens = [w for t in new_texts for w in _WORD.findall(t.casefold())]
    return sum(w not in known for w in tokens) / len(tokens) if tokens else 0.0


def drift_metrics(current: pd.DataFrame, previous: pd.DataFrame | None) -> dict[str, Any]:
    """Drift of ``current`` (columns id, text, label, drop) against ``previous`` and history."""
    words = current["text"].str.split().str.len()
    if previous is not None and len(previous):
        is_new = ~current["drop"].isin(set(previous["drop"]))  # tonight's drops, whatever names
    else:  # first snapshot: its last drop in name order against the others
        is_new = current["drop"] == (current["drop"].max() if len(current) else None)
    newest, history = current[is_new], current[~is_new]
    metrics: dict[str, Any] = {
        "new_drop": ",".join(sorted(newest["drop"].unique())) or None,
        "new_drop_label_linf": (linf_distance(label_shares(newest["label"]),
                                              label_shares(history["label"]))
                                if len(newest) and len(history) else 0.0),
        "previous_rows": None if previous is None else len(previous),
    }
    if previous is None or previous.empty:
        return metrics
    old_words = previous["text"].str.split().str.len()
    new_rows = current[~current["id"].isin(set(previous["id"]))]
    metrics.update({
        "label_linf": linf_distance(label_shares(current["label"]),
                                    label_shares(previous["label"])),
        "length_js_distance": length_distance(words, old_words),
        "median_length_change": (abs(words.median() / old_words.median() - 1)
                                 if len(words) and old_words.median() else 0.0),
        "new_rows": len(new_rows),
        "oov_rate": oov_rate(new_rows["text"], vocabulary(previous["text"])),
    })
    return metrics
