"""Did cleaning help on *this* data? A cheap proxy check of a label policy, with its confidence.

A stable share of the rows is held out as validation: the rows with annotator votes when there
are enough of them (scored against the votes' consensus), else a hashed ``validation_share``
of all rows (scored against their given labels). The TF-IDF + logistic regression stand-in is
trained on the remaining rows twice, as they are and after a policy's actions (``drop``
removes the rows, ``relabel`` gives them the suggested label; ``flag``/``keep`` change
nothing), and both are scored on the same validation rows. The gain is the difference of
macro-F1; its confidence is the share of paired bootstrap resamples of the validation rows in
which the cleaned model scores higher.

Limits (stated in README): without annotator votes the validation labels are the given,
possibly noisy, labels: symmetric noise on them only shrinks the measured gain, but a
systematic confusion present in both training and validation rows rewards a model that
learned it, so the check can understate what cleaning buys. The stand-in is a proxy for the
fine-tuned model, not the model itself.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from finegate.core.text import consensus

MIN_VALIDATION_ROWS = 30
MIN_VOTED_ROWS = 50  # validation from annotator consensus needs at least this many voted rows


def macro_f1_counts(truth: np.ndarray, predicted: np.ndarray, classes: int,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 (over the classes present in truth or predictions) for each weight vector.

    ``truth``/``predicted`` are class codes; ``weights`` (samples × rows, bootstrap counts)
    gives one macro-F1 per sample; None gives one over all rows.
    """
    w = np.ones((1, len(truth))) if weights is None else np.atleast_2d(weights)
    hit = (truth == predicted).astype(float)
    tp = np.stack([w @ (hit * (truth == c)) for c in range(classes)], axis=1)
    support = np.stack([w @ (truth == c).astype(float) for c in range(classes)], axis=1)
    said = np.stack([w @ (predicted == c).astype(float) for c in range(classes)], axis=1)
    denominator = support + said
    present = denominator > 0
    f1 = np.where(present, 2 * tp / np.where(present, denominator, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def paired_bootstrap(truth: np.ndarray, base: np.ndarray, other: np.ndarray, classes: int,
                     samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Macro-F1 gain of ``other`` over ``base`` on the same rows, its 95% interval and the
    share of resamples in which ``other`` scores higher (ties count half).

    Several prediction sets (e.g. seeds) can be passed as 2-D arrays (sets × rows): the gain is
    then the mean over sets, resampling the same rows for every set.
    """
    base, other = np.atleast_2d(base), np.atleast_2d(other)
    rng = np.random.default_rng(seed)
    rows = len(truth)
    weights = rng.multinomial(rows, np.full(rows, 1 / rows), size=samples).astype(float)
    gains = np.zeros(samples)
    observed = 0.0
    for b, o in zip(base, other, strict=True):
        gains += (macro_f1_counts(truth, o, classes, weights)
                  - macro_f1_counts(truth, b, classes, weights))
        observed += float(macro_f1_counts(truth, o, classes)[0]
                          - macro_f1_counts(truth, b, classes)[0])
    gains /= len(base)
    low, high = np.quantile(gains, [0.025, 0.975])
    return {"gain": observed / len(base), "low": float(low), "high": float(high),
            "confidence": float(((gains > 0) + 0.5 * (gains == 0)).mean())}


def stand_in(rows: int) -> Any:
    """TF-IDF (word unigrams) + logistic regression: the cheap model the check trains."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2 if rows >= 200 else 1),
                         LogisticRegression(C=10.0, max_iter=2000))


def fit_predict(texts: list[str], labels: list[str], evaluate: list[str]) -> np.ndarray:
    """The stand-in's predictions for ``evaluate`` after training on ``texts``/``labels``."""
    from threadpoolctl import threadpool_limits

    model = stand_in(len(texts))
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(texts, labels)
        return model.predict(evaluate)


def apply_actions(labels: list[str], actions: list[str], suggested: list[Any],
                  ) -> tuple[np.ndarray, list[str]]:
    """Which rows a policy keeps for training, and their (possibly relabelled) labels."""
    keep = np.array([a != "drop" for a in actions], dtype=bool)
    relabelled = [s if a == "relabel" and s is not None else lab
                  for lab, a, s in zip(labels, actions, suggested, strict=True)]
    return keep, relabelled


def _stable_share(key: str) -> float:
    return int(hashlib.sha256(f"policy-check:{key}".encode()).hexdigest()[:12], 16) / 16**12


@dataclass
class PolicyCheck:
    """The check's verdict: per policy, the gain over keeping every row as labelled."""

    chosen: str  # the policy ``auto`` applies (the configured one when not ``auto``)
    validation_rows: int = 0
    validation_labels: str = ""  # "annotator consensus" or "given labels"
    baseline_macro_f1: float | None = None
    effects: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the review state, the scorecard and the model card)."""
        return asdict(self)


def validation_part(keys: list[str], votes: list[Any] | None, share: float,
                    ) -> tuple[np.ndarray, list[str] | None, str]:
    """The held-out mask, the consensus labels when votes are used, and which labels."""
    voted = np.array([v is not None and len(v) >= 2 for v in (votes or [None] * len(keys))],
                     dtype=bool)
    if voted.sum() >= MIN_VOTED_ROWS:
        consensus_labels = [consensus(list(v)) if ok else "" for v, ok in
                            zip(votes or [], voted, strict=True)]
        return voted, consensus_labels, "annotator consensus"
    hashed = np.array([_stable_share(k) < share for k in keys], dtype=bool)
    return hashed, None, "given labels"


def check_policies(keys: list[str], texts: list[str], labels: list[str],
                   actions: dict[str, list[str]], suggested: list[Any],
                   label_set: list[str], *, votes: list[Any] | None = None,
                   validation_share: float = 0.2, confidence: float = 0.9,
                   samples: int = 1000, default: str = "flag") -> PolicyCheck:
    """Train the stand-in with and without each policy's actions; pick the policy whose gain
    is positive with at least ``confidence`` (largest gain wins), else ``default``. Rows the
    stand-in cannot be fitted on (e.g. no word left for TF-IDF) skip the check, never the
    night's label review."""
    try:
        return _check_policies(keys, texts, labels, actions, suggested, label_set, votes=votes,
                               validation_share=validation_share, confidence=confidence,
                               samples=samples, default=default)
    except ValueError as err:
        return PolicyCheck(chosen=default, note=f"skipped: the TF-IDF stand-in could not be "
                           f"fitted on these rows ({err})")


def _check_policies(keys: list[str], texts: list[str], labels: list[str],
                    actions: dict[str, list[str]], suggested: list[Any],
                    label_set: list[str], *, votes: list[Any] | None,
                    validation_share: float, confidence: float,
                    samples: int, default: str) -> PolicyCheck:
    held, consensus_labels, source = validation_part(keys, votes, validation_share)
    truth_labels = consensus_labels if consensus_labels is not None else labels
    train = ~held
    counts = Counter(lab for lab, t in zip(labels, train, strict=True) if t)
    if held.sum() < MIN_VALIDATION_ROWS or len(counts) < 2:
        return PolicyCheck(chosen=default, note=f"skipped: needs >= {MIN_VALIDATION_ROWS} "
                           "validation rows and >= 2 labels among the training rows")
    code = {lab: i for i, lab in enumerate(label_set)}
    truth = np.array([code[t] for t, h in zip(truth_labels, held, strict=True) if h])
    evaluate = [t for t, h in zip(texts, held, strict=True) if h]
    train_texts = [t for t, k in zip(texts, train, strict=True) if k]
    base = np.array([code[p] for p in fit_predict(
        train_texts, [lab for lab, k in zip(labels, train, strict=True) if k], evaluate)])
    check = PolicyCheck(chosen=default, validation_rows=int(held.sum()),
                        validation_labels=source,
                        baseline_macro_f1=float(macro_f1_counts(truth, base,
                                                                len(label_set))[0]))
    best = None
    for policy, policy_actions in actions.items():
        keep, relabelled = apply_actions(labels, policy_actions, suggested)
        use = keep & train
        changed = int((((~keep) | (np.array(relabelled) != np.array(labels))) & train).sum())
        if changed == 0:
            effect = {"gain": 0.0, "low": 0.0, "high": 0.0, "confidence": 0.5}
        elif len({lab for lab, u in zip(relabelled, use, strict=True) if u}) < 2:
            effect = {"gain": None, "low": None, "high": None, "confidence": 0.0,
                      "note": "fewer than 2 labels left to train on"}
        else:
            cleaned = np.array([code[p] for p in fit_predict(
                [t for t, u in zip(texts, use, strict=True) if u],
                [lab for lab, u in zip(relabelled, use, strict=True) if u], evaluate)])
            effect = paired_bootstrap(truth, base, cleaned, len(label_set), samples)
        effect["rows_changed"] = changed
        effect["helped"] = bool(effect["gain"] is not None and effect["gain"] > 0
                                and effect["confidence"] >= confidence)
        check.effects[policy] = effect
        if effect["helped"] and (best is None or effect["gain"] > check.effects[best]["gain"]):
            best = policy
    check.chosen = best or default
    check.note = (f"TF-IDF stand-in, {len(train_texts):,} training rows, "
                  f"{check.validation_rows:,} validation rows ({source}); a policy is used "
                  f"when its gain is positive in >= {confidence:.0%} of {samples} paired "
                  f"bootstrap resamples")
    return check
