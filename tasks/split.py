"""Split: a stable train/validation/test split from a hash of each row's ``id``.

The same id always lands in the same split, so rows never move between splits across nightly
runs and never leak from test into train.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from prefect import task

from finegate.config import Config, SplitConfig

SPLITS = ("train", "validation", "test")


class SplitError(RuntimeError):
    """The snapshot's split cannot train or evaluate a model."""


@dataclass(frozen=True)
class SplitResult:
    """Rows per split, and rows per label in each split."""

    rows: dict[str, int]
    labels: dict[str, dict[str, int]]


def split_of(row_id: str, shares: SplitConfig) -> str:
    """The split an id belongs to: its hash, read as a number in [0, 1), against the shares."""
    position = int(hashlib.sha256(row_id.encode()).hexdigest()[:15], 16) / 16**15
    if position < shares.train:
        return "train"
    return "validation" if position < shares.train + shares.validation else "test"


def assign_split(ids: pd.Series, shares: SplitConfig) -> pd.Series:
    """The split of every id."""
    return pd.Series([split_of(i, shares) for i in ids], index=ids.index, dtype=object)


def summarise_split(data_path: str | Path) -> SplitResult:
    """Count rows per split and label; fail if train or test is empty."""
    frame = pq.read_table(data_path, columns=["label", "split"]).to_pandas()
    rows = {s: int((frame["split"] == s).sum()) for s in SPLITS}
    labels = {s: {str(k): int(v) for k, v in
                  frame.loc[frame["split"] == s, "label"].value_counts().sort_index().items()}
              for s in SPLITS}
    empty = [s for s in ("train", "test") if rows[s] == 0]
    if empty:
        raise SplitError(f"the snapshot at {data_path} has no {' and no '.join(empty)} rows "
                         f"({rows}); add data or change the split shares in the config")
    return SplitResult(rows=rows, labels=labels)


@task(name="split")
def split(config: Config, data_path: str) -> SplitResult:
    """Prefect task: check and summarise the snapshot's stable split."""
    return summarise_split(data_path)
