"""Drift: how a snapshot differs from the previous one, and its newest drop from the history.

Comparators in the spirit of TFX's skew/drift checks: L-infinity distance between label shares,
Jensen-Shannon distance between text-length histograms, relative change of the median length,
and the out-of-vocabulary rate of new rows against the previous snapshot's vocabulary. The
thresholds live in ``expectations/curated_drift.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# RE2 (Arrow's regex engine) reads \w as ASCII only: spell out Unicode word characters
_NON_WORD = r"[^\p{L}\p{N}\p{M}_]+"


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


def _arrow_texts(texts: pd.Series) -> pa.Array:
    return pa.array(texts.tolist(), type=pa.large_string())


def word_counts(texts: pd.Series) -> pd.Series:
    """Whitespace-separated words per text (Arrow's C++ kernels: seconds for millions of rows)."""
    counts = pc.fill_null(pc.list_value_length(pc.utf8_split_whitespace(_arrow_texts(texts))), 0)
    return pd.Series(counts.to_numpy(zero_copy_only=False), index=texts.index)


def tokens(texts: pd.Series) -> pa.Array:
    """Every case-folded word token of the texts (runs of Unicode letters, digits, marks, _)."""
    pieces = pc.list_flatten(pc.split_pattern_regex(pc.utf8_lower(_arrow_texts(texts)),
                                                    _NON_WORD))
    return pc.filter(pieces, pc.not_equal(pieces, ""))


def vocabulary(texts: pd.Series) -> pa.Array:
    """The distinct case-folded words of the texts."""
    return pc.unique(tokens(texts))


def oov_rate(new_texts: pd.Series, known: pa.Array) -> float:
    """Share of word tokens in ``new_texts`` that are not in the vocabulary ``known``."""
    words = tokens(new_texts)
    if len(words) == 0:
        return 0.0
    return 1 - pc.sum(pc.is_in(words, value_set=known)).as_py() / len(words)


def drift_metrics(current: pd.DataFrame, previous: pd.DataFrame | None) -> dict[str, Any]:
    """Drift of ``current`` (columns id, text, label, drop) against ``previous`` and history."""
    words = word_counts(current["text"])
    if previous is not None and len(previous):
        is_new = ~current["drop"].isin(previous["drop"].unique())  # tonight's, whatever names
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
    old_words = word_counts(previous["text"])
    seen = pc.is_in(_arrow_texts(current["id"]), value_set=_arrow_texts(previous["id"]))
    new_rows = current[~seen.to_numpy(zero_copy_only=False)]
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


def rows_drift(new: pd.DataFrame, old: pd.DataFrame) -> dict[str, float]:
    """Drift of ``new`` rows (columns text, label) against ``old`` ones: label-share L∞,
    word-length Jensen-Shannon distance, median length change, OOV rate against ``old``."""
    if new.empty or old.empty:
        return {}
    words, old_words = word_counts(new["text"]), word_counts(old["text"])
    return {"label_linf": linf_distance(label_shares(new["label"]), label_shares(old["label"])),
            "length_js_distance": length_distance(words, old_words),
            "median_length_change": (abs(words.median() / old_words.median() - 1)
                                     if old_words.median() else 0.0),
            "oov_rate": oov_rate(new["text"], vocabulary(old["text"]))}
