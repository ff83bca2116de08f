"""The label policy's proxy check, and ``policy: auto`` choosing by it."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from finegate.core.config import LabelsConfig
from finegate.core.noise import add_noise
from finegate.core.policy_check import macro_f1_counts, paired_bootstrap
from finegate.tasks.labels import label_issues, resolve_policy
from tests.factories import LABELS, TOPIC_WORDS, topic_text

COMMON = ["the", "a", "of", "and", "to", "in", "said", "on", "for", "with"]


def snapshot_rows(rows: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.assign(source="s", position=range(len(frame)),
                        annotator_labels=frame.get("annotator_labels"))


def test_macro_f1_matches_sklearn_and_bootstrap_sees_a_real_gain() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    good = np.where(rng.random(300) < 0.9, truth, rng.integers(0, 3, 300))
    bad = np.where(rng.random(300) < 0.6, truth, rng.integers(0, 3, 300))
    assert abs(macro_f1_counts(truth, bad, 3)[0] - f1_score(truth, bad, average="macro")) < 1e-9
    result = paired_bootstrap(truth, bad, good, 3, samples=500)
    assert result["gain"] > 0.2 and result["low"] > 0 and result["confidence"] == 1.0
    same = paired_bootstrap(truth, good, good, 3, samples=200)
    assert same["gain"] == 0 and same["confidence"] == 0.5


def test_auto_chooses_drop_where_heavy_symmetric_noise_hurts() -> None:
    rng = random.Random(1)
    clean = [{"text": topic_text(LABELS[i % 3], rng, 10), "label": LABELS[i % 3]}
             for i in range(600)]
    noisy = add_noise("symmetric", pd.DataFrame(clean), 0.4, LABELS, seed=2)
    # a quarter of the rows were also labelled by three careful annotators: their consensus is
    # the validation truth
    noisy["annotator_labels"] = [[t] * 3 if i % 4 == 0 else None
                                 for i, t in enumerate(noisy["true_label"])]
    rows = snapshot_rows(noisy.to_dict("records"))
    issues, _ = label_issues(rows["text"].tolist(), rows["label"].tolist(), LABELS, 5)
    applied, check = resolve_policy(rows, issues, LabelsConfig(policy="auto"), LABELS)
    drop = check["effects"]["drop"]
    message = (f"40% symmetric noise: drop changed {drop['rows_changed']} rows, gain "
               f"{drop['gain']:+.3f} macro-F1 (95% CI {drop['low']:+.3f}..{drop['high']:+.3f}, "
               f"better in {drop['confidence']:.0%} of resamples); relabel "
               f"{check['effects']['relabel']['gain']:+.3f}; auto chose {check['chosen']}")
    assert check["validation_labels"] == "annotator consensus", message
    assert applied.policy == "drop" and drop["helped"] and drop["gain"] > 0.05, message
    assert check["configured"] == "auto"


def test_auto_keeps_rows_where_the_flags_are_hard_but_correct() -> None:
    rng = random.Random(5)
    rows = [{"text": topic_text(LABELS[i % 3], rng, 10), "label": LABELS[i % 3]}
            for i in range(600)]
    # genuine politics articles about technology: mostly tech words, rarely a politics word
    for _ in range(60):
        words = [rng.choice((TOPIC_WORDS["tech"] if rng.random() < 0.9
                             else TOPIC_WORDS["politics"]) if rng.random() < 0.6 else COMMON)
                 for _ in range(10)]
        rows.append({"text": " ".join(words), "label": "politics"})
    frame = snapshot_rows(rows)
    issues, _ = label_issues(frame["text"].tolist(), frame["label"].tolist(), LABELS, 5)
    flagged = issues["is_label_issue"].to_numpy()
    applied, check = resolve_policy(frame, issues, LabelsConfig(policy="auto"), LABELS)
    drop = check["effects"]["drop"]
    message = (f"clean labels, {flagged[600:].mean():.0%} of the 60 hard politics rows flagged "
               f"(and {flagged[:600].mean():.0%} of the rest): drop gain {drop['gain']:+.3f} "
               f"macro-F1 (better in {drop['confidence']:.0%} of resamples); auto chose "
               f"{check['chosen']}")
    assert flagged[600:].mean() > 0.2, message  # the detector does flag genuine rows
    assert applied.policy == "flag" and not drop["helped"] and drop["gain"] <= 0, message


def test_a_configured_policy_is_kept_and_its_effect_recorded() -> None:
    rng = random.Random(1)
    noisy = add_noise("symmetric", pd.DataFrame(
        [{"text": topic_text(LABELS[i % 3], rng, 10), "label": LABELS[i % 3]}
         for i in range(300)]), 0.3, LABELS, seed=2)
    rows = snapshot_rows(noisy[["text", "label"]].to_dict("records"))
    issues, _ = label_issues(rows["text"].tolist(), rows["label"].tolist(), LABELS, 5)
    applied, check = resolve_policy(rows, issues, LabelsConfig(policy="relabel"), LABELS)
    assert applied.policy == "relabel" and check["chosen"] == "relabel"
    assert list(check["effects"]) == ["relabel"] and check["validation_labels"] == "given labels"
    assert check["validation_rows"] > 30 and check["baseline_macro_f1"] is not None
    off = LabelsConfig(policy="drop", check={"enabled": False})
    assert resolve_policy(rows, issues, off, LABELS) == (off, None)


def test_the_check_reaches_the_scorecard_gain_and_the_model_card_line() -> None:
    from finegate.tasks.quality import cleaning_gain
    from finegate.tasks.register import policy_check_line

    check = {"configured": "auto", "chosen": "drop", "validation_rows": 150,
             "validation_labels": "annotator consensus", "note": "",
             "effects": {"drop": {"gain": 0.1, "confidence": 1.0, "rows_changed": 188},
                         "relabel": {"gain": 0.047, "confidence": 0.99, "rows_changed": 60}}}
    assert cleaning_gain(check) == 0.1
    assert cleaning_gain({**check, "chosen": "flag"}) == 0.1  # auto kept rows: best candidate
    assert cleaning_gain(None) is None
    line = policy_check_line(check)
    assert line.startswith("configured auto, applied drop; TF-IDF proxy on 150 held-out rows")
    assert "drop +0.100 macro-F1 (better in 100% of bootstrap resamples, 188 rows changed)" in line
    assert policy_check_line(None) == "not checked"


def test_rows_the_stand_in_cannot_fit_skip_the_check_not_the_review() -> None:
    from finegate.core.policy_check import check_policies

    texts = ["!! ?", "# ·", "-- ..", "~ ~"] * 60  # no word TF-IDF can count
    labels = [LABELS[i % 3] for i in range(len(texts))]
    check = check_policies([f"k{i}" for i in range(len(texts))], texts, labels,
                           {"drop": ["drop" if i % 7 == 0 else "keep"
                                     for i in range(len(texts))]},
                           [None] * len(texts), LABELS, default="flag")
    assert check.chosen == "flag"
    assert check.note.startswith("skipped: the TF-IDF stand-in could not be fitted")
