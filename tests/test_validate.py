from pathlib import Path

import pandas as pd
import pytest

from finegate.config import Config
from tasks.validate import QualityGateFailed, validate_snapshot

GOOD_CARD = {"rows": 60, "class_balance": 0.99, "labels_present": 2, "duplicate_ratio": 0.5,
             "empty_ratio": 0.0, "quarantine_ratio": 0.0}


def snapshot_rows(tmp_path: Path, **changes: list) -> str:
    rows = {"id": [f"r{i}" for i in range(60)],
            "text": [f"a perfectly ordinary sentence number {i}" for i in range(60)],
            "label": ["a", "b"] * 30, "split": ["train", "test", "validation"] * 20}
    rows.update(changes)
    path = tmp_path / "data.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return Config(lake_path=str(tmp_path_factory.mktemp("lake")), labels=["a", "b"])


def test_clean_snapshot_passes_and_reports_warnings(tmp_path: Path, config: Config) -> None:
    result = validate_snapshot(snapshot_rows(tmp_path), GOOD_CARD, config, tmp_path)
    assert result.passed and not result.failures
    assert len(result.warnings) == 1 and "duplicate_ratio" in result.warnings[0]
    assert Path(result.gate_path).is_file()
    assert Path(result.data_docs).is_file()


def test_critical_failures_stop_with_readable_reason(tmp_path: Path, config: Config) -> None:
    data = snapshot_rows(tmp_path, id=["same"] * 2 + [f"r{i}" for i in range(58)],
                         label=["a", "b"] * 29 + ["c", "a"])
    card = {**GOOD_CARD, "class_balance": 0.5}
    with pytest.raises(QualityGateFailed) as failure:
        validate_snapshot(data, card, config, tmp_path)
    message = str(failure.value)
    assert "3 critical expectation(s) failed" in message
    assert "expect_column_values_to_be_unique(column=id)" in message
    assert "expect_column_values_to_be_in_set(column=label" in message and "['c']" in message
    assert "class_balance" in message
    assert (tmp_path / "gate.json").is_file()
