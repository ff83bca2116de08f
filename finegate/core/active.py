"""Active-learning scores: which rows a person's answer teaches the model most about.

Pure functions, arrays in and out (as in ``cleanlab.rank``): the review queue and the
active-learning benchmark rank rows with the very same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 − (top probability − runner-up) per row of an ``(n, k)`` array: 1 = a coin toss."""
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities))
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """Prediction entropy per row, normalised to [0, 1] by log(k)."""
    k = probabilities.shape[1]
    if k < 2:
        return np.zeros(len(probabilities))
    p = np.clip(probabilities, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(k)


def knn_density(embeddings: Any, rows: np.ndarray, *, k: int = 10,
                chunk: int = 512) -> np.ndarray:
    """Mean cosine similarity of each of ``rows`` to its ``k`` nearest other rows of
    ``embeddings`` (``(n, d)``, dense or scipy sparse, rows L2-normalised); ``(len(rows),)``.

    Chunked: memory is ``chunk × n``, never ``n × n``.
    """
    n = embeddings.shape[0]
    k = max(1, min(k, n - 1))
    out = np.zeros(len(rows))
    if n < 2:
        return out
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        sims = embeddings[part] @ embeddings.T
        sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
        sims[np.arange(len(part)), part] = -np.inf  # a row is not its own neighbour
        nearest = np.partition(sims, n - k, axis=1)[:, n - k:]
        out[start:start + len(part)] = nearest.mean(axis=1)
    return np.clip(out, 0.0, None)


def density_weighted(uncertainty: np.ndarray, density: np.ndarray, *,
                     beta: float = 1.0) -> np.ndarray:
    """Information density (Settles & Craven 2008): uncertainty × density^β."""
    return uncertainty * np.power(density, beta)


def label_quality(given: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """cleanlab's label quality score per row (self-confidence; low = likely wrong)."""
    from cleanlab.rank import get_label_quality_scores

    return get_label_quality_scores(given, probabilities)


def top_rows(scores: np.ndarray, budget: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``budget`` highest scores, best first, skipping ``exclude`` (a mask)."""
    scores = np.asarray(scores, dtype=float).copy()
    if exclude is not None:
        scores[exclude] = -np.inf
    order = np.argsort(-scores, kind="stable")
    order = order[np.isfinite(scores[order])]
    return order[:budget]


def stand_in_probabilities(texts: list[str], labels: list[str], label_set: list[str], *,
                           folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold class probabilities ``(n, len(label_set))`` from the TF-IDF + logistic
    regression stand-in (the label review's noise model): what the queue ranks by when there
    is no champion. Uniform probabilities when there are too few rows to fit it."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    k = len(label_set)
    uniform = np.full((len(texts), k), 1.0 / k)
    index = {label: n for n, label in enumerate(label_set)}
    codes = np.array([index.get(label, -1) for label in labels])
    known = codes >= 0
    counts = np.bincount(codes[known], minlength=k)
    folds = min(folds, int(counts[counts > 0].min())) if known.any() else 0
    if folds < 2 or (counts > 0).sum() < 2:
        return uniform
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=200_000),
        LogisticRegression(C=10.0, max_iter=2000))
    chosen = [t for t, keep in zip(texts, known, strict=True) if keep]
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            part = cross_val_predict(model, chosen, codes[known], method="predict_proba",
                                     cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    except ValueError:  # e.g. no word occurs twice: TF-IDF has no vocabulary
        return uniform
    present = np.flatnonzero(counts > 0)
    full = uniform.copy()
    full[np.flatnonzero(known)] = 0.0
    full[np.ix_(np.flatnonzero(known), present)] = part
    return full


def tfidf_embeddings(texts: list[str]) -> Any:
    """L2-normalised TF-IDF rows (sparse): the embedding space of the k-NN density."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        return TfidfVectorizer(sublinear_tf=True, min_df=1).fit_transform(texts)
    except ValueError:  # no word at all
        from scipy.sparse import csr_matrix

        return csr_matrix((len(texts), 1))
