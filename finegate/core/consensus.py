"""Consensus of annotator votes: CROWDLAB (``cleanlab.multiannotator``) or plain majority.

CROWDLAB weighs each annotator by how often they agree with the others and with a classifier's
out-of-sample probabilities, so a sloppy annotator counts less than a careful one; it also
scores each consensus (``consensus_quality``) and each annotator (``annotator_quality``).
Without probabilities (or where cleanlab cannot run) the majority vote is the consensus.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from finegate.core.text import consensus


@dataclass(frozen=True)
class Consensus:
    """Per row: ``label``, ``quality`` (None for majority) and ``agreement`` (share of votes
    that match the consensus); per annotator: CROWDLAB quality; how it was computed."""

    rows: pd.DataFrame
    annotator_quality: dict[str, float] = field(default_factory=dict)
    method: str = "majority"


def voter_names(votes: list[str], voters: Any) -> list[str]:
    """Annotator names of one row's votes: given, else by position (``#1``, ``#2``, ...)."""
    if voters is not None and len(voters) == len(votes):
        return [str(v) for v in voters]
    return [f"#{n + 1}" for n in range(len(votes))]


def majority(votes: list[list[str]], note: str = "majority vote") -> Consensus:
    """Majority vote per row (ties go to the alphabetically first label)."""
    labels = [consensus(list(v)) for v in votes]
    return Consensus(pd.DataFrame({
        "label": labels, "quality": [None] * len(votes),
        "agreement": [list(v).count(lab) / len(v) for v, lab in zip(votes, labels, strict=True)],
    }), method=note)


def vote_matrix(votes: list[list[str]], voters: list[Any],
                label_set: list[str]) -> pd.DataFrame:
    """Rows × annotators of label codes (NaN where an annotator did not vote); a second vote
    of the same annotator on a row replaces the first."""
    code = {label: float(i) for i, label in enumerate(label_set)}
    cells: dict[str, dict[int, float]] = {}
    for row, (row_votes, row_voters) in enumerate(zip(votes, voters, strict=True)):
        for name, vote in zip(voter_names(list(row_votes), row_voters), row_votes, strict=True):
            cells.setdefault(name, {})[row] = code[vote]
    return pd.DataFrame({name: pd.Series(column, dtype=float) for name, column in
                         sorted(cells.items())}, index=range(len(votes)))


def crowd_consensus(votes: list[list[str]], voters: list[Any], label_set: list[str],
                    pred_probs: np.ndarray | None) -> Consensus:
    """CROWDLAB consensus of ``votes`` (rows of labels from ``label_set``) given out-of-sample
    class probabilities ``pred_probs`` (rows × ``len(label_set)``); majority vote without them
    or when cleanlab cannot score these votes (the method says why)."""
    if not votes:
        return Consensus(pd.DataFrame(columns=["label", "quality", "agreement"]))
    if pred_probs is None:
        return majority(votes, "majority vote (no model probabilities)")
    from cleanlab.multiannotator import get_label_quality_multiannotator

    matrix = vote_matrix(votes, voters, label_set)
    probabilities = np.clip(pred_probs, 1e-6, None)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "annotators labelled only one example"
            # no multiprocessing inside: safe in Prefect's and Dask's threads
            result = get_label_quality_multiannotator(matrix, probabilities, verbose=False)
    except (ValueError, IndexError, ZeroDivisionError) as error:
        return majority(votes, f"majority vote (CROWDLAB could not run: {error})")
    quality = result["label_quality"]
    stats = result["annotator_stats"]
    return Consensus(
        pd.DataFrame({"label": [label_set[int(c)] for c in quality["consensus_label"]],
                      "quality": quality["consensus_quality_score"].astype(float).to_numpy(),
                      "agreement": quality["annotator_agreement"].astype(float).to_numpy()}),
        annotator_quality={str(name): float(q) for name, q in
                           stats["annotator_quality"].sort_index().items()},
        method=f"CROWDLAB (cleanlab.multiannotator) over {len(votes):,} rows, "
               f"{matrix.shape[1]} annotators")
