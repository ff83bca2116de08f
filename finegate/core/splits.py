"""Stable splits: a row's split is a hash of its id, read against the configured shares.

The same id always lands in the same split, so rows never move between splits across nightly
runs and never leak from test into train.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from finegate.core.config import SplitConfig

SPLITS = ("train", "validation", "test")


def split_of(row_id: str, shares: SplitConfig) -> str:
    """The split an id belongs to: its hash, read as a number in [0, 1), against the shares."""
    position = int(hashlib.sha256(row_id.encode()).hexdigest()[:15], 16) / 16**15
    if position < shares.train:
        return "train"
    return "validation" if position < shares.train + shares.validation else "test"


def assign_split(ids: pd.Series, shares: SplitConfig) -> pd.Series:
    """The split of every id."""
    return pd.Series([split_of(i, shares) for i in ids], index=ids.index, dtype=object)
