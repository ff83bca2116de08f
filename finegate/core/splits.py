"""Split strategies: which of train/validation/test (and which fold) every curated row is in.

A row's split is decided by its split anchor (its own id, or the id of the earlier row the
dedup stage relates it to), so related rows always share a split. Strategies
(``split.strategy``):

- ``hash``: the anchor's SHA-256, read as a number in [0, 1), against the shares. Stateless:
  the same anchor always lands in the same split.
- ``stratified``: every label is held at the shares. Rows already assigned (in the previous
  snapshot, built with the same split settings) keep their split; a new row related to an
  assigned row takes that row's split; the other new anchor groups fill each label's deficit
  against the target ``share * rows of the label``, one group at a time in the order of their
  anchor's SHA-256 (deterministic, independent of arrival order within a night).
- ``time``: by drop order (drop names sorted). A group is as old as its oldest row's drop: the
  newest ``test_drops`` drops are test, the ``validation_drops`` before them validation (0: the
  older drops' groups go to validation by hash at ``validation / (train + validation)``), the
  rest train. Re-derived every night, so a row only moves forward (test, then validation or
  train as newer drops arrive), never from train into evaluation.
- ``kfold``: every group's fold is ``floor(hash position * folds)``: stable and anchor-aware;
  the last fold is test, the one before it validation, the others train. Cross-validation
  rounds (:func:`fold_view`) move the test fold; :func:`fold_summary` gives mean and spread.
  The registered model trains on every fold but the last (:func:`final_view`: the validation
  fold is training data too) for the rounds' median early-stopping step (:func:`final_steps`);
  the last fold stays held out, so its test score and promotion are on rows never trained on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from finegate.core.config import SplitConfig

SPLITS = ("train", "validation", "test")


def hash_position(anchor: str) -> float:
    """The anchor's SHA-256 read as a number in [0, 1)."""
    return int(hashlib.sha256(anchor.encode()).hexdigest()[:15], 16) / 16**15


def split_of(row_id: str, shares: SplitConfig) -> str:
    """The hash split of an anchor: its hash position against the shares."""
    position = hash_position(row_id)
    if position < shares.train:
        return "train"
    return "validation" if position < shares.train + shares.validation else "test"


def assign_split(ids: pd.Series, shares: SplitConfig) -> pd.Series:
    """The hash split of every anchor."""
    return pd.Series([split_of(i, shares) for i in ids], index=ids.index, dtype=object)


def fold_of(anchor: str, folds: int) -> int:
    """The k-fold fold of an anchor (0 .. folds-1)."""
    return min(int(hash_position(anchor) * folds), folds - 1)


def kfold_split(fold: int, folds: int) -> str:
    """The split a fold is in: the last fold is test, the one before it validation."""
    return "test" if fold == folds - 1 else "validation" if fold == folds - 2 else "train"


def stratified_splits(rows: pd.DataFrame, previous: dict[tuple[str, int], str],
                      shares: SplitConfig) -> pd.Series:
    """Per row (columns source, position, label, anchor; in keep order), its split: assigned
    rows keep theirs, new rows join their anchor group's split, new groups fill their label's
    deficit (largest ``target - rows`` first, ties in split order)."""
    keys = list(zip(rows["source"], rows["position"], strict=True))
    split = pd.Series([previous.get(k) for k in keys], index=rows.index, dtype=object)
    group_split = {}
    for anchor, assigned in zip(rows["anchor"], split, strict=True):
        if assigned is not None:
            group_split.setdefault(anchor, assigned)  # the earliest assigned row of the group
    joined = split.isna() & rows["anchor"].isin(group_split.keys())
    split[joined] = rows.loc[joined, "anchor"].map(group_split)
    target = {label: {s: share * n for s, share in shares.shares().items()}
              for label, n in Counter(rows["label"]).items()}
    have: dict[str, Counter] = {label: Counter() for label in target}
    for label, s in zip(rows["label"], split, strict=True):
        if s is not None:
            have[label][s] += 1
    new = rows.loc[split.isna()]
    groups = {anchor: group for anchor, group in new.groupby("anchor", sort=False)}
    for anchor in sorted(groups, key=lambda a: (hashlib.sha256(a.encode()).hexdigest(), a)):
        group = groups[anchor]
        label = group["label"].iloc[0]  # the group's first row in keep order decides
        chosen = max(SPLITS, key=lambda s, lab=label: (target[lab][s] - have[lab][s],
                                                       -SPLITS.index(s)))
        split[group.index] = chosen
        for lab in group["label"]:
            have[lab][chosen] += 1
    return split


def time_splits(rows: pd.DataFrame, drops: list[str], shares: SplitConfig,
                ) -> tuple[pd.Series, dict[str, list[str]]]:
    """Per row (columns drop, anchor), its split by the age of its anchor group, and which
    drops are test and validation. Needs more drops than ``test_drops + validation_drops``.

    ``drops`` are the data drops, in time order by name; a row of any other drop in ``rows``
    (a review drop: people's answers about older rows, not new data) counts as older than all
    of them, so it never makes a drop "the newest" and goes to train or validation.
    """
    order = sorted(drops)
    test = order[len(order) - shares.test_drops:]
    validation = order[len(order) - shares.test_drops - shares.validation_drops:
                       len(order) - shares.test_drops]
    rank = {d: i for i, d in enumerate(order)}
    oldest = rows.groupby("anchor")["drop"].agg(lambda ds: min(ds, key=lambda d: rank.get(d, -1)))
    held_out = shares.validation / max(shares.train + shares.validation, 1e-9)

    def split_of_group(anchor: str, drop: str) -> str:
        if drop in test:
            return "test"
        if drop in validation or (not validation and hash_position(anchor) < held_out):
            return "validation"
        return "train"

    by_group = {a: split_of_group(a, d) for a, d in oldest.items()}
    return (rows["anchor"].map(by_group).astype(object),
            {"test_drops": test, "validation_drops": validation})


def label_split_shares(labels: pd.Series, splits: pd.Series) -> dict[str, dict[str, float]]:
    """Per label, the share of its rows in each split."""
    table = pd.crosstab(labels, splits, normalize="index")
    return {str(label): {s: float(table.loc[label].get(s, 0.0)) for s in SPLITS}
            for label in table.index}


def max_share_deviation(labels: pd.Series, splits: pd.Series, shares: SplitConfig) -> float:
    """The largest gap between a label's share in a split and the configured share."""
    configured = shares.shares()
    return max((abs(share - configured[s])
                for per_split in label_split_shares(labels, splits).values()
                for s, share in per_split.items()), default=0.0)


def fold_view(data_path: str, out: Path, fold: int, folds: int) -> str:
    """One cross-validation round of a kfold snapshot, written to ``out/data``: fold ``fold``
    is test, the fold before it validation, the others train (round ``folds-1`` is the
    snapshot's own split)."""
    return write_view(data_path, out, lambda f: "test" if f == fold else
                      "validation" if f == (fold - 1) % folds else "train")


def final_view(data_path: str, out: Path, folds: int) -> str:
    """The registered model's data under kfold, written to ``out/data``: the last fold is test
    (held out), every other fold (the validation fold too) is train; no validation split."""
    return write_view(data_path, out, lambda f: "test" if f == folds - 1 else "train")


def write_view(data_path: str, out: Path, split_of_fold: Callable[[int], str]) -> str:
    """The snapshot's rows with the split ``split_of_fold(fold)``, as ``out/data``."""
    import pyarrow.parquet as pq

    rows = pq.read_table(data_path, columns=["id", "text", "label", "fold"]).to_pandas()
    rows["split"] = [split_of_fold(f) for f in rows["fold"]]
    (out / "data").mkdir(parents=True, exist_ok=True)
    rows.to_parquet(out / "data" / "rows.parquet", index=False)
    return str(out / "data")


def final_steps(rounds: list[dict[str, float]]) -> int:
    """The registered model's step budget under kfold: the median of the rounds' early-stopping
    points (``best_step``, the step of the best validation macro-F1), rounded up; 0 (the
    configured budget) when no round had one."""
    import math

    import numpy as np

    steps = [r["best_step"] for r in rounds if r.get("best_step")]
    return int(math.ceil(float(np.median(steps)))) if steps else 0


def fold_summary(rounds: list[dict[str, float]]) -> dict[str, object]:
    """Mean and standard deviation of accuracy and macro-F1 over cross-validation rounds."""
    import numpy as np

    summary: dict[str, object] = {"folds": len(rounds), "rounds": rounds}
    for metric in ("accuracy", "macro_f1"):
        values = np.array([r[metric] for r in rounds], dtype=float)
        summary[metric] = {"mean": float(values.mean()),
                           "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return summary
