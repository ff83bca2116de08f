import pandas as pd
import pytest

from finegate.core.drift import drift_metrics, length_distance, linf_distance, oov_rate, vocabulary


def frame(labels: list[str], drop: str, words: int = 10, word: str = "news") -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{drop}-{i}" for i in range(len(labels))],
                         "text": [" ".join([word] * words)] * len(labels),
                         "label": labels, "drop": drop})


def test_linf_is_the_largest_share_change() -> None:
    assert linf_distance({"a": 0.5, "b": 0.5}, {"a": 0.7, "b": 0.3}) == pytest.approx(0.2)
    assert linf_distance({"a": 1.0}, {"b": 1.0}) == 1.0


def test_same_data_has_no_drift() -> None:
    data = pd.concat([frame(["a", "b"] * 10, "d1"), frame(["a", "b"] * 10, "d2")])
    metrics = drift_metrics(data, data)
    assert metrics["label_linf"] == 0 and metrics["new_drop_label_linf"] == 0
    assert metrics["length_js_distance"] == pytest.approx(0, abs=1e-6)
    assert metrics["new_rows"] == 0 and metrics["oov_rate"] == 0


def test_shifted_labels_longer_texts_and_new_words_are_measured() -> None:
    previous = frame(["a", "b"] * 10, "d1")
    current = pd.concat([previous, frame(["a"] * 20, "d2", words=40, word="crypto")])
    metrics = drift_metrics(current, previous)
    assert metrics["label_linf"] == pytest.approx(0.25)
    assert metrics["new_drop_label_linf"] == pytest.approx(0.5)
    assert metrics["oov_rate"] == 1.0 and metrics["new_rows"] == 20
    assert metrics["median_length_change"] > 0.5
    assert length_distance(pd.Series([40] * 20), pd.Series([10] * 20)) > 0.5


def test_first_snapshot_has_only_new_drop_drift() -> None:
    metrics = drift_metrics(frame(["a", "b"], "d1"), None)
    assert "label_linf" not in metrics and metrics["previous_rows"] is None
    assert oov_rate(pd.Series([]), vocabulary(pd.Series(["x"]))) == 0.0


def test_the_new_drop_is_what_the_previous_snapshot_lacks_not_the_last_name() -> None:
    previous = frame(["a", "b"] * 10, "z-old")
    current = pd.concat([previous, frame(["a"] * 10, "a-new")])
    metrics = drift_metrics(current, previous)
    assert metrics["new_drop"] == "a-new"
    assert metrics["new_drop_label_linf"] == pytest.approx(0.5)
