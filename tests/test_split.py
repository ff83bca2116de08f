from pathlib import Path

import pandas as pd
import pytest

from finegate.config import SplitConfig
from tasks.split import SplitError, assign_split, split_of, summarise_split


def test_split_is_stable_and_follows_shares() -> None:
    ids = pd.Series([f"row-{i}" for i in range(5000)])
    shares = SplitConfig(train=0.7, validation=0.1, test=0.2)
    first, second = assign_split(ids, shares), assign_split(ids.iloc[::-1], shares)
    assert (first == second.sort_index()).all()
    counts = first.value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.7, abs=0.03)
    assert counts["test"] == pytest.approx(0.2, abs=0.03)


def test_changing_other_rows_never_moves_a_row() -> None:
    shares = SplitConfig()
    assert split_of("article-42", shares) == split_of("article-42", shares)


def test_empty_test_split_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"label": ["a", "b"], "split": ["train", "train"]}).to_parquet(path)
    with pytest.raises(SplitError, match="no test rows"):
        summarise_split(path)
