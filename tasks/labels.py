"""Labels: annotator agreement and label-noise detection by confident learning (cleanlab).

Noise: out-of-fold predicted probabilities from TF-IDF + logistic regression (cheap, strong on
topic-like text; see BENCHMARKS.md) feed ``cleanlab.filter.find_label_issues``. Each row gets a
label quality score, a suggested label and an issue flag; the configured policy then ``drop``s
(to quarantine, with the reason), ``relabel``s (when the model is confident) or ``flag``s it.
Annotators: per-row agreement with the consensus, the share of unanimous rows, Krippendorff's α
(nominal) and, where annotator ids exist, each annotator's agreement with the consensus.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import LabelsConfig
from finegate.core.lake import Lake
from finegate.core.quarantine import reject, write_quarantine
from finegate.core.results import Annotation, DedupResult, LabelsResult
from finegate.core.schemas import DECISIONS_SCHEMA, row_keys, write_parquet
from finegate.core.text import consensus

MIN_ROWS_FOR_NOISE = 20


def out_of_fold_probabilities(texts: list[str], labels: np.ndarray, n_classes: int,
                              folds: int, seed: int = 0) -> np.ndarray:
    """Predicted class probabilities for each row from a model that never saw that row."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=200_000),
        LogisticRegression(C=10.0, max_iter=2000),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    present = np.unique(labels)
    probabilities = cross_val_predict(model, texts, labels, cv=cv, method="predict_proba")
    full = np.zeros((len(texts), n_classes))
    full[:, present] = probabilities
    return full


def no_issues(rows: int) -> pd.DataFrame:
    """The label-issue columns for rows that were not (or could not be) checked."""
    return pd.DataFrame({"label_quality": np.nan, "suggested_label": None,
                         "suggested_confidence": np.nan, "is_label_issue": False},
                        index=range(rows))


def label_issues(texts: list[str], labels: list[str], label_set: list[str],
                 folds: int) -> tuple[pd.DataFrame, str]:
    """Per row: label quality, suggested label and confidence, issue flag; and a status note."""
    empty = no_issues(len(labels))
    counts = Counter(labels)
    if len(labels) < MIN_ROWS_FOR_NOISE or len(counts) < 2:
        return empty, f"skipped: needs >= {MIN_ROWS_FOR_NOISE} rows and >= 2 labels"
    folds = min(folds, min(counts.values()))
    if folds < 2:
        return empty, "skipped: a label has a single row, too few for cross-validation"
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    index = {label: i for i, label in enumerate(label_set)}
    given = np.array([index[label] for label in labels])
    present = np.unique(given)
    try:
        probabilities = out_of_fold_probabilities(texts, given, len(label_set), folds)
    except ValueError as error:  # e.g. no word occurs twice: TF-IDF has no vocabulary
        return empty, f"skipped: the noise model could not be fitted ({error})"
    # cleanlab wants classes 0..K-1 all present: score on the present classes only.
    remap = {c: i for i, c in enumerate(present)}
    compact = probabilities[:, present]
    compact_labels = np.array([remap[c] for c in given])
    # n_jobs=1: a multiprocessing pool forked from this threaded process (Prefect, Dask) can
    # deadlock; one process is fast enough here (seconds for 100k rows)
    issues = find_label_issues(compact_labels, compact, n_jobs=1)
    quality = get_label_quality_scores(compact_labels, compact)
    suggested = probabilities.argmax(axis=1)
    frame = pd.DataFrame({
        "label_quality": quality,
        "suggested_label": [label_set[i] for i in suggested],
        "suggested_confidence": probabilities.max(axis=1),
        "is_label_issue": issues,
    })
    return frame, f"tfidf+logreg, {folds}-fold out-of-fold probabilities"


def choose_actions(issues: pd.DataFrame, labels: list[str], settings: LabelsConfig) -> list[str]:
    """``keep`` for rows without issue; else the policy (relabel falls back to flag if unsure)."""
    actions = []
    for flagged, suggested, confidence, label in zip(
            issues["is_label_issue"], issues["suggested_label"], issues["suggested_confidence"],
            labels, strict=True):
        if not flagged:
            actions.append("keep")
        elif settings.policy == "relabel":
            sure = confidence >= settings.relabel_confidence and suggested != label
            actions.append("relabel" if sure else "flag")
        else:
            actions.append(settings.policy)
    return actions


def annotation_agreement(annotator_labels: pd.Series, annotator_ids: pd.Series,
                         ) -> tuple[list[float | None], Annotation]:
    """Per-row agreement with the consensus, and dataset agreement statistics."""
    rows = [list(v) if v is not None and len(v) else None for v in annotator_labels]
    per_row = [None if v is None else Counter(v)[consensus(v)] / len(v) for v in rows]
    rated = [v for v in rows if v is not None]
    if not rated:
        return per_row, Annotation()
    return per_row, Annotation(
        rows_with_annotators=len(rated),
        unanimous_share=sum(len(set(v)) == 1 for v in rated) / len(rated),
        mean_annotators=float(np.mean([len(v) for v in rated])),
        krippendorff_alpha=krippendorff_alpha(rows, annotator_ids),
        per_annotator=per_annotator_agreement(rows, annotator_ids))


def krippendorff_alpha(rows: list[list[str] | None], ids: pd.Series) -> float | None:
    """Nominal Krippendorff's α over all rated rows (annotators by id, else by position)."""
    import krippendorff

    rated = [(v, i) for v, i in zip(rows, ids, strict=True) if v is not None]
    if not any(len(v) > 1 for v, _ in rated):
        return None  # one vote per row: agreement is undefined
    raters = sorted({r for v, i in rated for r in _raters(v, i)})
    values = sorted({label for v, _ in rated for label in v})
    code = {label: float(n) for n, label in enumerate(values)}
    matrix = np.full((len(raters), len(rated)), np.nan)
    column = {r: n for n, r in enumerate(raters)}
    for unit, (votes, row_ids) in enumerate(rated):
        for rater, vote in zip(_raters(votes, row_ids), votes, strict=True):
            matrix[column[rater], unit] = code[vote]
    if len(values) < 2:
        return 1.0
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))


def _raters(votes: list[str], ids: Any) -> list[str]:
    if ids is not None and len(ids) == len(votes):
        return [str(i) for i in ids]
    return [f"#{n}" for n in range(len(votes))]


def per_annotator_agreement(rows: list[list[str] | None], ids: pd.Series) -> dict[str, float]:
    """Share of each named annotator's votes that match the row's consensus."""
    hits: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for votes, row_ids in zip(rows, ids, strict=True):
        if votes is None or row_ids is None or len(row_ids) != len(votes):
            continue
        agreed = consensus(votes)
        for rater, vote in zip(row_ids, votes, strict=True):
            total[rater] += 1
            hits[rater] += vote == agreed
    return {rater: hits[rater] / total[rater] for rater in sorted(total)}


def curated_candidates(lake: Lake, drops: list[str], dedup: DedupResult) -> pd.DataFrame:
    """The cleaned rows that survive dedup (the input of label-noise detection)."""
    columns = ["source", "position", "id", "drop", "text", "label", "annotator_labels",
               "annotator_ids"]
    files = lake.silver_files(drops)
    if not files:
        return pd.DataFrame(columns=columns)
    frame = pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files],
                      ignore_index=True)
    dropped = row_keys(dedup.duplicates_path)
    keep = [key not in dropped for key in zip(frame["source"], frame["position"], strict=True)]
    return frame.loc[keep].sort_values(["source", "position"]).reset_index(drop=True)


def review_labels(lake: Lake, drops: list[str], dedup: DedupResult, label_set: list[str],
                  settings: LabelsConfig) -> LabelsResult:
    """Decide keep/flag/relabel/drop for every row; quarantine dropped rows with the reason."""
    rows = curated_candidates(lake, drops, dedup)
    labels = rows["label"].tolist()
    if settings.noise_detection:
        issues, note = label_issues(rows["text"].tolist(), labels, label_set, settings.folds)
    else:
        issues, note = no_issues(len(rows)), "disabled in the config"
    agreement, annotation = annotation_agreement(rows["annotator_labels"],
                                                 rows["annotator_ids"])
    decisions = rows.assign(
        suggested_label=issues["suggested_label"].to_numpy(),
        label_quality=issues["label_quality"].to_numpy(),
        is_label_issue=issues["is_label_issue"].astype(bool).to_numpy(),
        action=choose_actions(issues, labels, settings), agreement=agreement,
    )
    write_decisions(lake, drops, decisions)
    return LabelsResult(
        decisions_path=str(lake.labels), rows=len(decisions), noise_detection=note,
        issues=int(decisions["is_label_issue"].sum()),
        actions={a: int(n) for a, n in decisions["action"].value_counts().items()},
        annotation=annotation,
    )


def write_decisions(lake: Lake, drops: list[str], decisions: pd.DataFrame) -> None:
    """Write the decisions, and each drop's label-dropped rows to its quarantine."""
    dropped = decisions.loc[decisions["action"] == "drop"]
    targets = [lake.labels, *(lake.quarantine(drop, "labels") for drop in drops)]
    with lake.staged(*targets) as (labels, *quarantines):
        write_parquet(decisions, labels, DECISIONS_SCHEMA, "decisions")
        for drop, folder in zip(drops, quarantines, strict=True):
            part = dropped.loc[dropped["drop"] == drop]
            reasons = [f"label issue: labelled {lab!r}, model suggests {sug!r} (label quality "
                       f"{q:.3f}); policy drop" for lab, sug, q in
                       zip(part["label"], part["suggested_label"], part["label_quality"],
                           strict=True)]
            write_quarantine(reject(part, "labels", reasons), folder, "labels")
