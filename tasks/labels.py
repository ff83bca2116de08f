"""Labels: annotator agreement and label-noise detection by confident learning (cleanlab).

Noise: out-of-fold predicted probabilities from TF-IDF + logistic regression (cheap, strong on
topic-like text; see BENCHMARKS.md) feed ``cleanlab.filter.find_label_issues``. Each row gets a
label quality score, a suggested label and an issue flag; the configured policy then ``drop``s
(to quarantine, with the reason), ``relabel``s (when the model is confident) or ``flag``s it.
Annotators: per-row agreement with the consensus, the share of unanimous rows, Krippendorff's α
(nominal) and, where annotator ids exist, each annotator's agreement with the consensus.

A night costs its drop: decisions are kept per drop (``labels/drop-<drop>.parquet``) beside a
state file (``labels/_state.json``: the silver files and dedup log each drop was reviewed
against, the settings, per-drop counts), and a night judges only the rows of new or
re-ingested drops. Above ``joint_rows`` earlier rows, one model fitted on a stratified sample
of at most ``sample_rows`` of them scores the new rows, which it never saw, and cleanlab judges
the new rows on those scores (one fit instead of k; measured in BENCHMARKS.md). Up to
``joint_rows`` earlier rows (or with too few new rows to judge alone), the new rows are fitted
out-of-fold together with the earlier rows (a sample of ``joint_rows`` of them, if more): below
that cap, exactly a full review's verdicts. The whole history is re-reviewed when the settings
change, every ``full_review_every`` nights, or when the new rows' label shares drift from the
history's. Rows that dedup removes later leave their drop's decisions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import LabelsConfig
from finegate.core.consensus import crowd_consensus
from finegate.core.lake import Lake, read_json, write_json
from finegate.core.quarantine import reject, write_quarantine
from finegate.core.results import Annotation, DedupResult, HumanReviews, LabelsResult
from finegate.core.schemas import DECISIONS_SCHEMA, parquet_rows, write_parquet
from finegate.core.text import consensus

MIN_ROWS_FOR_NOISE = 20
# Judged on their own, new rows set cleanlab's per-label thresholds: fewer than this many are
# fitted out-of-fold together with a sample of the history instead.
MIN_ROWS_HELD_OUT = 1_000
STATE_FILE = "_state.json"  # a leading "_": Parquet readers of the folder skip it
STATE_VERSION = 2  # 2: decisions carry the human review columns
# Settings that say when and on how much to fit, not what a decision is: changing them does
# not invalidate earlier decisions.
SCHEDULING_FIELDS = {"sample_rows", "joint_rows", "full_review_every", "drift_threshold"}
KEY = ["source", "position"]
CANDIDATE_COLUMNS = ["source", "position", "id", "drop", "text", "label", "annotator_labels",
                     "annotator_ids"]


def noise_model() -> Any:
    """TF-IDF word uni- and bigrams + logistic regression: the model behind every verdict."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=200_000),
        LogisticRegression(C=10.0, max_iter=2000),
    )


def out_of_fold_probabilities(texts: list[str], labels: np.ndarray, n_classes: int,
                              folds: int, seed: int = 0, blas_threads: int | None = 1,
                              ) -> np.ndarray:
    """Predicted class probabilities for each row from a model that never saw that row
    (``blas_threads=None``: BLAS keeps its default thread count)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    present = np.unique(labels)
    # One BLAS thread: L-BFGS over ~10^5 sparse features spends its time in small vector ops
    # that more BLAS threads only slow down (3x slower with 2 on 2 cores; BENCHMARKS.md).
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        probabilities = cross_val_predict(noise_model(), texts, labels, cv=cv,
                                          method="predict_proba")
    full = np.zeros((len(texts), n_classes))
    full[:, present] = probabilities
    return full


def held_out_probabilities(train_texts: list[str], train_labels: np.ndarray, texts: list[str],
                           n_classes: int) -> np.ndarray:
    """Class probabilities for ``texts`` from one model fitted on other rows only."""
    from threadpoolctl import threadpool_limits

    model = noise_model()
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(train_texts, train_labels)
        probabilities = model.predict_proba(texts)
    full = np.zeros((len(texts), n_classes))
    full[:, model.classes_] = probabilities
    return full


def no_issues(rows: int) -> pd.DataFrame:
    """The label-issue columns for rows that were not (or could not be) checked."""
    return pd.DataFrame({"label_quality": np.nan, "suggested_label": None,
                         "suggested_confidence": np.nan, "is_label_issue": False},
                        index=range(rows))


def label_codes(labels: list[str], label_set: list[str]) -> np.ndarray:
    """Each label's index in ``label_set``."""
    index = {label: i for i, label in enumerate(label_set)}
    return np.array([index[label] for label in labels], dtype=int)


def issues_from_probabilities(given: np.ndarray, probabilities: np.ndarray,
                              label_set: list[str]) -> pd.DataFrame:
    """cleanlab's verdict on rows with given label codes and out-of-sample probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # cleanlab wants classes 0..K-1 all present: score on the present classes only.
    present = np.unique(given)
    remap = {c: i for i, c in enumerate(present)}
    compact = probabilities[:, present]
    compact_labels = np.array([remap[c] for c in given])
    # n_jobs=1: a multiprocessing pool forked from this threaded process (Prefect, Dask) can
    # deadlock; one process is fast enough here (seconds for 100k rows)
    issues = find_label_issues(compact_labels, compact, n_jobs=1)
    quality = get_label_quality_scores(compact_labels, compact)
    suggested = probabilities.argmax(axis=1)
    return pd.DataFrame({
        "label_quality": quality,
        "suggested_label": [label_set[i] for i in suggested],
        "suggested_confidence": probabilities.max(axis=1),
        "is_label_issue": issues,
    })


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
    given = label_codes(labels, label_set)
    try:
        probabilities = out_of_fold_probabilities(texts, given, len(label_set), folds)
    except ValueError as error:  # e.g. no word occurs twice: TF-IDF has no vocabulary
        return empty, f"skipped: the noise model could not be fitted ({error})"
    return (issues_from_probabilities(given, probabilities, label_set),
            f"tfidf+logreg, {folds}-fold out-of-fold probabilities")


def held_out_issues(train: pd.DataFrame, rows: pd.DataFrame,
                    label_set: list[str]) -> tuple[pd.DataFrame, str]:
    """Label issues of ``rows`` (text, label) judged by a model fitted on ``train`` alone."""
    empty = no_issues(len(rows))
    if rows["label"].nunique() < 2 or train["label"].nunique() < 2:
        return empty, "skipped: needs >= 2 labels among the new and the earlier rows"
    given = label_codes(rows["label"].tolist(), label_set)
    try:
        probabilities = held_out_probabilities(
            train["text"].tolist(), label_codes(train["label"].tolist(), label_set),
            rows["text"].tolist(), len(label_set))
    except ValueError as error:  # e.g. no word occurs twice: TF-IDF has no vocabulary
        return empty, f"skipped: the noise model could not be fitted ({error})"
    return (issues_from_probabilities(given, probabilities, label_set),
            "tfidf+logreg fitted on those rows, the new rows held out")


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


def resolve_policy(rows: pd.DataFrame, issues: pd.DataFrame, settings: LabelsConfig,
                   label_set: list[str]) -> tuple[LabelsConfig, dict[str, Any] | None]:
    """The settings to decide with (``auto``: the proxy check's choice) and the check's
    verdict on these rows (finegate/core/policy_check.py); None when the check is off."""
    from finegate.core.policy_check import check_policies

    auto = settings.policy == "auto"
    if not (auto or settings.check.enabled):
        return settings, None
    keys = [f"{s}:{p}" for s, p in zip(rows["source"], rows["position"], strict=True)]
    order = np.argsort([hashlib.sha256(k.encode()).hexdigest() for k in keys], kind="stable")
    take = np.sort(order[:settings.check.max_rows])  # a stable sample of at most max_rows
    part, found = rows.iloc[take], issues.iloc[take]
    labels = part["label"].tolist()
    candidates = ("drop", "relabel") if auto else (settings.policy,)
    check = check_policies(
        [keys[i] for i in take], part["text"].tolist(), labels,
        {p: choose_actions(found, labels, settings.model_copy(update={"policy": p}))
         for p in candidates}, found["suggested_label"].tolist(), label_set,
        votes=part["annotator_labels"].tolist() if "annotator_labels" in part else None,
        validation_share=settings.check.validation_share,
        confidence=settings.check.confidence, default="flag" if auto else settings.policy)
    if not auto:
        check.chosen = settings.policy
    return (settings.model_copy(update={"policy": check.chosen}),
            {"configured": settings.policy, **check.as_dict()})


def annotation_agreement(annotator_labels: pd.Series, annotator_ids: pd.Series,
                         ) -> tuple[list[float | None], Annotation]:
    """Per-row agreement with the consensus, and dataset agreement statistics."""
    rows = [list(v) if v is not None and len(v) else None for v in annotator_labels]
    per_row = row_agreement(annotator_labels)
    rated = [v for v in rows if v is not None]
    if not rated:
        return per_row, Annotation()
    return per_row, Annotation(
        rows_with_annotators=len(rated),
        unanimous_share=sum(len(set(v)) == 1 for v in rated) / len(rated),
        mean_annotators=float(np.mean([len(v) for v in rated])),
        krippendorff_alpha=krippendorff_alpha(rows, annotator_ids),
        per_annotator=per_annotator_agreement(rows, annotator_ids))


def row_agreement(annotator_labels: pd.Series) -> list[float | None]:
    """Per row, the share of annotator votes that match the consensus (None without votes)."""
    return [Counter(v)[consensus(list(v))] / len(v) if v is not None and len(v) else None
            for v in annotator_labels]


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


# --- the lake: per-drop decisions and the review state -------------------------------------


def decisions_file(lake: Lake, drop: str) -> Path:
    """One drop's decisions (the prefix keeps a drop named ``_x`` visible to Parquet readers)."""
    return lake.labels / f"drop-{drop}.parquet"


def silver_fingerprint(lake: Lake, drop: str) -> list[list[Any]]:
    """Name, size and mtime of each silver file of a drop: they change when it is re-ingested."""
    stats = [(Path(f).name, os.stat(f)) for f in lake.silver_files([drop])]
    return [[name, stat.st_size, stat.st_mtime_ns] for name, stat in stats]


def settings_digest(settings: LabelsConfig, label_set: list[str]) -> str:
    """A digest of what decides a row's verdict: the label settings and the label set."""
    payload = [settings.model_dump(exclude=SCHEDULING_FIELDS), list(label_set)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def read_state(lake: Lake) -> dict[str, Any] | None:
    """The last review's state, or None when there is none this version can use."""
    path = lake.labels / STATE_FILE
    try:
        state = read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None  # unreadable: a full review rebuilds it
    return state if state and state.get("version") == STATE_VERSION else None


def removed_by_drop(dedup: DedupResult) -> dict[str, pd.DataFrame]:
    """The dedup log's removed rows (``source``, ``position``), per drop."""
    log = pq.read_table(dedup.duplicates_path, columns=["drop", *KEY]).to_pandas()
    log = log.drop_duplicates()
    return {drop: rows[KEY] for drop, rows in log.groupby("drop")}


def removed_digest(removed: pd.DataFrame | None) -> str:
    """A digest of a drop's removed keys: when it changes, the drop's decisions need filtering."""
    if removed is None or removed.empty:
        return ""
    ordered = removed.sort_values(KEY)
    text = "\n".join(f"{s}\t{p}" for s, p in zip(ordered["source"], ordered["position"],
                                                 strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def without_removed(frame: pd.DataFrame, removed: pd.DataFrame | None) -> pd.DataFrame:
    """``frame`` without the rows the dedup log removes (matched by source and position)."""
    if removed is None or removed.empty or frame.empty:
        return frame
    gone = pd.MultiIndex.from_frame(frame[KEY]).isin(pd.MultiIndex.from_frame(removed[KEY]))
    return frame.loc[~gone]


def read_survivors(lake: Lake, drop: str, removed: pd.DataFrame | None,
                   columns: list[str]) -> pd.DataFrame:
    """One drop's silver rows that survive dedup, read file by file and only ``columns``."""
    frames = [without_removed(pq.read_table(f, columns=columns).to_pandas(), removed)
              for f in lake.silver_files([drop])]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def drop_entry(lake: Lake, drop: str, decisions: pd.DataFrame,
               removed: pd.DataFrame | None) -> dict[str, Any]:
    """The state of one reviewed drop: what it was reviewed against, and its counts."""
    return {"silver": silver_fingerprint(lake, drop), "removed": removed_digest(removed),
            "rows": len(decisions), "issues": int(decisions["is_label_issue"].sum()),
            "actions": {a: int(n) for a, n in effective_action(decisions).value_counts().items()},
            "labels": {lab: int(n) for lab, n in decisions["label"].value_counts().items()}}


def dropped_rows(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decided rows (with their text) whose action is ``drop``, in the quarantine's shape."""
    part = decisions.loc[effective_action(decisions) == "drop"]
    reasons = [f"label issue: labelled {lab!r}, model suggests {sug!r} (label quality "
               f"{q:.3f}); policy drop" for lab, sug, q in
               zip(part["label"], part["suggested_label"], part["label_quality"], strict=True)]
    return reject(part, "labels", reasons)


def write_drop_decisions(lake: Lake, drop: str, decisions: pd.DataFrame,
                         quarantined: pd.DataFrame) -> None:
    """Replace one drop's decision file and label quarantine, each written then renamed."""
    staging = lake.staging()
    try:
        write_parquet(decisions, staging, DECISIONS_SCHEMA, "decisions")
        lake.labels.mkdir(parents=True, exist_ok=True)
        os.replace(staging / "decisions.parquet", decisions_file(lake, drop))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with lake.staged(lake.quarantine(drop, "labels")) as (folder,):
        write_quarantine(quarantined, folder, "labels")


def write_all_decisions(lake: Lake, drops: list[str], decisions: pd.DataFrame,
                        state: dict[str, Any]) -> None:
    """Replace the whole decisions folder (state included) and every drop's label quarantine."""
    by_drop = dict(tuple(decisions.groupby("drop")))
    targets = [lake.labels, *(lake.quarantine(drop, "labels") for drop in drops)]
    with lake.staged(*targets) as (labels, *quarantines):
        for drop, folder in zip(drops, quarantines, strict=True):
            part = by_drop.get(drop, decisions.iloc[:0])
            write_parquet(part, labels, DECISIONS_SCHEMA, decisions_file(lake, drop).stem)
            write_quarantine(dropped_rows(part), folder, "labels")
        write_json(labels / STATE_FILE, state)


# --- planning a night -----------------------------------------------------------------------


@dataclass
class Plan:
    """The listed drops by what tonight does with them."""

    kept: list[str] = field(default_factory=list)  # reviewed; decisions stand as they are
    refresh: list[str] = field(default_factory=list)  # reviewed; the dedup log changed since
    pending: list[str] = field(default_factory=list)  # new or re-ingested: scored tonight

    @property
    def reviewed(self) -> list[str]:
        """The drops whose decisions are carried over."""
        return self.kept + self.refresh


def plan_drops(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
               state: dict[str, Any]) -> Plan:
    """Sort the drops into kept, refresh (dedup removed rows since) and pending (new)."""
    plan = Plan()
    for drop in drops:
        entry = state["drops"].get(drop)
        if (entry is None or not decisions_file(lake, drop).is_file()
                or entry["silver"] != silver_fingerprint(lake, drop)):
            plan.pending.append(drop)
        elif entry["removed"] != removed_digest(removed.get(drop)):
            plan.refresh.append(drop)
        else:
            plan.kept.append(drop)
    return plan


def refresh_drops(lake: Lake, plan: Plan, removed: dict[str, pd.DataFrame],
                  state: dict[str, Any]) -> Plan:
    """Take the rows dedup has since removed out of reviewed drops' decisions; a drop where
    dedup now keeps a row that has no decision (it was a duplicate before) is re-reviewed."""
    refreshed = Plan(kept=list(plan.kept), pending=list(plan.pending))
    for drop in plan.refresh:
        decisions = without_removed(pd.read_parquet(decisions_file(lake, drop)),
                                    removed.get(drop))
        survivors = parquet_rows(lake.silver(drop)) - len(removed.get(drop, ()))
        if len(decisions) != survivors:
            refreshed.pending.append(drop)
            continue
        quarantined = without_removed(pd.read_parquet(lake.quarantine(drop, "labels")),
                                      removed.get(drop))
        write_drop_decisions(lake, drop, decisions, quarantined)
        state["drops"][drop] = drop_entry(lake, drop, decisions, removed.get(drop))
        refreshed.refresh.append(drop)
    return refreshed


def label_shift(history: Counter[str], new: Counter[str]) -> float:
    """The largest difference of one label's share between two label counts (L-infinity)."""
    total_history, total_new = sum(history.values()), sum(new.values())
    if not total_history or not total_new:
        return 0.0
    return max(abs(history[lab] / total_history - new[lab] / total_new)
               for lab in set(history) | set(new))


def full_review_reason(plan: Plan, state: dict[str, Any], new_labels: pd.Series,
                       settings: LabelsConfig) -> str:
    """Why tonight re-reviews the whole history; empty when the new rows suffice."""
    history: Counter[str] = Counter()
    for drop in plan.reviewed:
        history.update(state["drops"][drop]["labels"])
    if not history:
        return "no reviewed history left (every drop is new or re-ingested)"
    every = settings.full_review_every
    if every and state["nights_since_full"] + 1 >= every:
        return f"scheduled every {every} nights with new rows"
    shift = label_shift(history, Counter(new_labels))
    if shift > settings.drift_threshold:
        return (f"the label shares of the new rows differ from the history's by {shift:.2f}, "
                f"more than drift_threshold {settings.drift_threshold}")
    return ""


# --- reviewing ------------------------------------------------------------------------------


def detect(texts: list[str], labels: list[str], label_set: list[str],
           settings: LabelsConfig) -> tuple[pd.DataFrame, str]:
    """The label-issue columns for the rows, or none when detection is off."""
    if not settings.noise_detection:
        return no_issues(len(labels)), "disabled in the config"
    return label_issues(texts, labels, label_set, settings.folds)


def decide(rows: pd.DataFrame, issues: pd.DataFrame, settings: LabelsConfig) -> pd.DataFrame:
    """The decision rows: each row with its suggested label, quality, issue flag and action."""
    return rows.assign(
        suggested_label=issues["suggested_label"].to_numpy(),
        label_quality=issues["label_quality"].to_numpy(),
        is_label_issue=issues["is_label_issue"].astype(bool).to_numpy(),
        action=choose_actions(issues, rows["label"].tolist(), settings),
        agreement=row_agreement(rows["annotator_labels"]),
        **{column: None for column in HUMAN_COLUMNS},
    )


def review_everything(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
                      label_set: list[str], settings: LabelsConfig,
                      why: str) -> dict[str, Any]:
    """Re-review every surviving row of the history in one fit; returns the new state."""
    parts = [read_survivors(lake, drop, removed.get(drop), CANDIDATE_COLUMNS) for drop in drops]
    rows = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=CANDIDATE_COLUMNS)).sort_values(KEY).reset_index(drop=True)
    issues, note = detect(rows["text"].tolist(), rows["label"].tolist(), label_set, settings)
    applied, check = resolve_policy(rows, issues, settings, label_set)
    decisions = decide(rows, issues, applied)
    by_drop = dict(tuple(decisions.groupby("drop")))
    state = {"version": STATE_VERSION, "settings": settings_digest(settings, label_set),
             "nights_since_full": 0, "policy_check": check,
             "note": f"full review of {len(rows):,} rows ({why}); {note}",
             "drops": {drop: drop_entry(lake, drop, by_drop.get(drop, decisions.iloc[:0]),
                                        removed.get(drop)) for drop in drops}}
    write_all_decisions(lake, drops, decisions, state)
    return state


def sample_history(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
                   state: dict[str, Any], cap: int) -> pd.DataFrame:
    """At most ``cap`` surviving rows of ``drops`` (all of them below the cap), sampled per
    drop and stratified by label with a seed per drop; read one drop at a time."""
    total = sum(state["drops"][drop]["rows"] for drop in drops)
    share = 1.0 if total <= cap else cap / total
    parts = []
    for drop in drops:
        rows = read_survivors(lake, drop, removed.get(drop), [*KEY, "text", "label"])
        if share < 1 and len(rows):
            rows = rows.groupby("label", group_keys=False).sample(
                frac=share, random_state=zlib.crc32(drop.encode()))
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=KEY)


def score_new_rows(lake: Lake, plan: Plan, removed: dict[str, pd.DataFrame],
                   new: pd.DataFrame, label_set: list[str], settings: LabelsConfig,
                   state: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """The label-issue columns of the new rows, and how they were judged."""
    earlier = sum(state["drops"][drop]["rows"] for drop in plan.reviewed)
    if not settings.noise_detection:
        return no_issues(len(new)), f"{len(new):,} new rows; disabled in the config"
    if earlier > settings.joint_rows and len(new) >= MIN_ROWS_HELD_OUT:
        sample = sample_history(lake, plan.reviewed, removed, state, settings.sample_rows)
        issues, note = held_out_issues(sample, new, label_set)
    else:  # the union in the order a full review uses: below joint_rows, the very same fit
        sample = sample_history(lake, plan.reviewed, removed, state, settings.joint_rows)
        union = pd.concat([sample.assign(is_new=False), new[[*KEY, "text", "label"]].assign(
            is_new=True)], ignore_index=True).sort_values(KEY, ignore_index=True)
        issues, note = detect(union["text"].tolist(), union["label"].tolist(), label_set,
                              settings)
        # both in key order: the union's new rows line up with ``new``
        issues = issues.loc[union["is_new"].to_numpy()].reset_index(drop=True)
    against = ("all" if len(sample) == earlier else f"a stratified sample of {len(sample):,} of"
               ) + f" {earlier:,} earlier rows"
    return issues, f"{len(new):,} new rows judged against {against}; {note}"


def review_new_rows(lake: Lake, plan: Plan, removed: dict[str, pd.DataFrame],
                    label_set: list[str], settings: LabelsConfig,
                    state: dict[str, Any]) -> dict[str, Any]:
    """Judge the pending drops' rows (the rest of the history only as training data); write
    their decisions; returns the updated state."""
    new = pd.concat([read_survivors(lake, drop, removed.get(drop), CANDIDATE_COLUMNS)
                     for drop in plan.pending], ignore_index=True)
    new = new.sort_values(KEY, ignore_index=True)  # the order the joint fit uses
    issues, note = score_new_rows(lake, plan, removed, new, label_set, settings, state)
    applied, state["policy_check"] = resolve_policy(new, issues, settings, label_set)
    decisions = decide(new, issues, applied)
    by_drop = dict(tuple(decisions.groupby("drop")))
    for drop in plan.pending:
        part = by_drop.get(drop, decisions.iloc[:0])
        write_drop_decisions(lake, drop, part, dropped_rows(part))
        state["drops"][drop] = drop_entry(lake, drop, part, removed.get(drop))
    state.update(nights_since_full=state["nights_since_full"] + 1, note=f"incremental: {note}")
    return state


def forget_unlisted(lake: Lake, drops: list[str], state: dict[str, Any]) -> None:
    """Remove the decisions of drops that are no longer part of the history."""
    listed = {decisions_file(lake, drop).name for drop in drops}
    for path in lake.labels.glob("drop-*.parquet"):
        if path.name not in listed:
            path.unlink()
    state["drops"] = {drop: entry for drop, entry in state["drops"].items() if drop in drops}


def history_annotation(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
                       reviews: pd.DataFrame | None = None) -> Annotation:
    """Annotator agreement over the whole history, reading only the annotator columns; review
    rows that dedup removed (their row survives elsewhere) count too."""
    parts = []
    for drop in drops:
        rows = read_survivors(lake, drop, removed.get(drop),
                              [*KEY, "annotator_labels", "annotator_ids"])
        rated = [v is not None and len(v) > 0 for v in rows["annotator_labels"]]
        parts.append(rows.loc[np.array(rated, dtype=bool)])
    if reviews is not None and len(reviews):
        parts.append(reviews.loc[~reviews["survives"], [*KEY, "annotator_labels",
                                                         "annotator_ids"]])
    if not parts:
        return Annotation()
    rows = pd.concat(parts, ignore_index=True)
    return annotation_agreement(rows["annotator_labels"], rows["annotator_ids"])[1]


# --- human reviews: a person's votes override the model's action -----------------------------

HUMAN_COLUMNS = ["human_label", "consensus_quality", "reviewed_by", "review_queue",
                 "annotated_at", "review_of"]
REVIEW_COLUMNS = [*KEY, "id", "drop", "annotator_labels", "annotator_ids", "flags"]
REVIEWS_FILE = "_reviews.parquet"  # the last consensus, reused while the reviews are unchanged


def effective_action(decisions: pd.DataFrame) -> pd.Series:
    """Each decision's action, ``human`` where a person's review decides the label."""
    if "human_label" not in decisions:
        return decisions["action"]
    return decisions["action"].where(decisions["human_label"].isna(), "human")


def lineage(flags: Any) -> dict[str, str]:
    """``review_of``, ``queue`` and ``annotated_at`` from a review row's flags (ingest)."""
    found = {}
    for flag in flags if flags is not None else []:
        key, _, value = str(flag).partition(":")
        if key in ("review_of", "queue", "annotated_at") and value:
            found[key] = value
    return found


def read_review_rows(lake: Lake, drops: list[str]) -> pd.DataFrame:
    """Every review row of the history: silver rows flagged ``human_review`` (by ingest), the
    duplicates dedup logged included; reads only the columns a review needs."""
    parts = []
    for drop in drops:
        for path in lake.silver_files([drop]):
            rows = pq.read_table(path, columns=REVIEW_COLUMNS).to_pandas()
            marked = [f is not None and "human_review" in list(f) for f in rows["flags"]]
            parts.append(rows.loc[np.array(marked, dtype=bool)])
    return (pd.concat(parts, ignore_index=True) if parts
            else pd.DataFrame(columns=REVIEW_COLUMNS))


def locate_reviews(reviews: pd.DataFrame, dedup: DedupResult,
                   survivors: pd.DataFrame) -> pd.DataFrame:
    """The review rows with the surviving row each reviews (``target_*``): itself when it
    survives, else the kept row of its duplicate cluster; none when that is gone."""
    if reviews.empty:
        return reviews.assign(survives=False, target_source=None, target_position=None,
                              target_drop=None, review_of=None, queue=None, annotated_at=None)
    log = pq.read_table(dedup.duplicates_path, columns=[*KEY, "duplicate_of"]).to_pandas()
    root_of = dict(zip(zip(log["source"], log["position"], strict=True), log["duplicate_of"],
                       strict=True))
    where = dict(zip(zip(survivors["source"], survivors["position"], strict=True),
                     survivors["drop"], strict=True))
    by_id = dict(zip(survivors["id"], zip(survivors["source"], survivors["position"],
                                          strict=True), strict=True))
    keys = list(zip(reviews["source"], reviews["position"], strict=True))
    targets = [key if key in where else by_id.get(root_of.get(key)) for key in keys]
    meta = [lineage(f) for f in reviews["flags"]]
    return reviews.assign(
        survives=[key in where for key in keys],
        target_source=[t[0] if t else None for t in targets],
        target_position=[t[1] if t else None for t in targets],
        target_drop=[where[t] if t else None for t in targets],
        review_of=[m.get("review_of") for m in meta], queue=[m.get("queue") for m in meta],
        annotated_at=[m.get("annotated_at") for m in meta])


def combine_reviews(reviews: pd.DataFrame) -> pd.DataFrame:
    """One row per reviewed target: the votes of every review of it, a later vote of the same
    named annotator replacing an earlier one; lineage of the latest review, all names."""
    columns = ["source", "position", "votes", "voters", "reviewed_by", "review_queue",
               "annotated_at", "review_of"]
    if reviews.empty:
        return pd.DataFrame(columns=columns)
    ordered = reviews.loc[reviews["target_source"].notna()].assign(
        at=lambda f: f["annotated_at"].fillna("")).sort_values(["at", "drop", *KEY], kind="stable")
    combined = []
    for (source, position), group in ordered.groupby(["target_source", "target_position"],
                                                     sort=True):
        votes: dict[str, str] = {}
        for n, (row_votes, row_ids) in enumerate(zip(group["annotator_labels"],
                                                     group["annotator_ids"], strict=True)):
            named = row_ids is not None and len(row_ids) == len(row_votes)
            for k, vote in enumerate(row_votes):
                votes[str(row_ids[k]) if named else f"#{n}.{k + 1}"] = vote
        last = group.iloc[-1]
        combined.append({
            "source": source, "position": int(position), "votes": list(votes.values()),
            "voters": list(votes), "reviewed_by": sorted(v for v in votes if v[:1] != "#"),
            "review_queue": last["queue"], "annotated_at": last["annotated_at"],
            "review_of": last["review_of"]})
    return pd.DataFrame(combined, columns=columns)


def review_probabilities(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
                         state: dict[str, Any], targets: pd.DataFrame, label_set: list[str],
                         settings: LabelsConfig) -> np.ndarray | None:
    """Out-of-fold class probabilities of the reviewed rows (the label review's model, fitted
    with a sample of at most ``joint_rows`` other rows); None when it cannot be fitted."""
    sample = sample_history(lake, drops, removed, state, settings.joint_rows)
    reviewed = pd.MultiIndex.from_frame(targets[KEY])
    if len(sample):
        sample = sample.loc[~pd.MultiIndex.from_frame(sample[KEY]).isin(reviewed)]
    union = pd.concat([targets[[*KEY, "text", "label"]].assign(is_target=True),
                       sample[[*KEY, "text", "label"]].assign(is_target=False)],
                      ignore_index=True)
    counts = Counter(union["label"])
    folds = min(settings.folds, min(counts.values()))
    if len(union) < MIN_ROWS_FOR_NOISE or len(counts) < 2 or folds < 2:
        return None
    try:
        probabilities = out_of_fold_probabilities(
            union["text"].tolist(), label_codes(union["label"].tolist(), label_set),
            len(label_set), folds)
    except ValueError:  # e.g. no word occurs twice
        return None
    return probabilities[union["is_target"].to_numpy()]


def reviews_digest(combined: pd.DataFrame, label_set: list[str], method: str) -> str:
    """What decides the consensus of the reviews: their votes, the label set, the method."""
    payload = [combined[["source", "position", "votes", "voters"]].to_numpy().tolist(),
               list(label_set), method]
    return hashlib.sha256(json.dumps(payload, default=list).encode()).hexdigest()[:16]


def review_consensus(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
                     state: dict[str, Any], combined: pd.DataFrame, texts: pd.DataFrame,
                     label_set: list[str], settings: LabelsConfig,
                     method: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per reviewed row (``texts``: the reviewed rows' text and label): the consensus label and
    quality; the consensus summary. Recomputed
    only when the reviews change (else read from ``labels/_reviews.parquet``)."""
    digest = reviews_digest(combined, label_set, method)
    saved, path = state.get("reviews", {}), lake.labels / REVIEWS_FILE
    if saved.get("digest") == digest and path.is_file():
        return pd.read_parquet(path), saved
    targets = combined.merge(texts[[*KEY, "text", "label"]], on=KEY, how="left")
    probabilities = (review_probabilities(lake, drops, removed, state, targets, label_set,
                                          settings) if method == "crowdlab" else None)
    result = crowd_consensus(targets["votes"].tolist(), targets["voters"].tolist(), label_set,
                             probabilities)
    consensus = combined[KEY].assign(human_label=result.rows["label"].to_numpy(),
                                     consensus_quality=result.rows["quality"].astype(float))
    summary = {"digest": digest, "method": result.method if method == "crowdlab"
               else "majority vote (annotators.consensus: majority)",
               "annotator_quality": result.annotator_quality}
    lake.labels.mkdir(parents=True, exist_ok=True)
    consensus.to_parquet(path, index=False)
    state["reviews"] = summary
    return consensus, summary


def human_overrides(reviews: pd.DataFrame, consensus: pd.DataFrame,
                    combined: pd.DataFrame) -> pd.DataFrame:
    """Per reviewed surviving row (``source``, ``position``): the human review columns."""
    return combined.merge(consensus, on=KEY)[[*KEY, *HUMAN_COLUMNS]]


def with_human(decisions: pd.DataFrame, overrides: pd.DataFrame) -> pd.DataFrame:
    """``decisions`` with the human review columns set from ``overrides`` (null elsewhere)."""
    merged = decisions.drop(columns=[c for c in HUMAN_COLUMNS if c in decisions]).merge(
        overrides, on=KEY, how="left")
    return merged.astype({c: object for c in HUMAN_COLUMNS if c != "consensus_quality"})


def human_signature(frame: pd.DataFrame) -> list[Any]:
    """The human review columns of decisions, comparable between two versions."""
    if "human_label" not in frame:
        return [None] * len(frame)
    ordered = frame.sort_values(KEY)
    return [json.dumps([None if v is None or (isinstance(v, float) and np.isnan(v)) else
                        (list(v) if isinstance(v, np.ndarray | list) else v)
                        for v in row], default=str)
            for row in ordered[HUMAN_COLUMNS].itertuples(index=False)]


def apply_human_reviews(lake: Lake, drops: list[str], dedup: DedupResult,
                        removed: dict[str, pd.DataFrame], label_set: list[str],
                        settings: LabelsConfig, state: dict[str, Any],
                        method: str) -> tuple[HumanReviews, pd.DataFrame]:
    """Set the human review columns of the decisions from the review rows of the history;
    only drops holding a reviewed row (now or before) are read, and rewritten (decisions and
    label quarantine) where their reviews changed."""
    rows = read_review_rows(lake, drops)
    before = [drop for drop in drops if state["drops"][drop]["actions"].get("human")]
    if rows.empty and not before:
        state.pop("reviews", None)
        return HumanReviews(), locate_reviews(rows, dedup, rows)
    survivors = pd.concat([pq.read_table(decisions_file(lake, drop), columns=[
        *KEY, "id", "drop"]).to_pandas() for drop in drops], ignore_index=True)
    reviews = locate_reviews(rows, dedup, survivors)
    combined = combine_reviews(reviews)
    touched = sorted(set(before) | set(reviews["target_drop"].dropna()))
    if combined.empty:
        overrides = pd.DataFrame(columns=[*KEY, *HUMAN_COLUMNS]).astype({"position": "int64"})
        state.pop("reviews", None)
        summary: dict[str, Any] = {}
    else:
        texts = pd.concat([read_survivors(lake, drop, removed.get(drop), [*KEY, "text", "label"])
                           for drop in touched], ignore_index=True)
        consensus, summary = review_consensus(lake, drops, removed, state, combined, texts,
                                              label_set, settings, method)
        overrides = human_overrides(reviews, consensus, combined)
    decided = []
    for drop in touched:
        decisions = pd.read_parquet(decisions_file(lake, drop))
        updated = with_human(decisions, overrides)
        if human_signature(updated) != human_signature(decisions):
            text = read_survivors(lake, drop, removed.get(drop), [*KEY, "text"])
            write_drop_decisions(lake, drop, updated, dropped_rows(updated.merge(text, on=KEY)))
            state["drops"][drop] = drop_entry(lake, drop, updated, removed.get(drop))
        decided.append(updated)
    return review_counts(pd.concat(decided, ignore_index=True) if decided else None,
                         reviews, summary), reviews


def review_counts(decisions: pd.DataFrame | None, reviews: pd.DataFrame,
                  summary: dict[str, Any]) -> HumanReviews:
    """The human review figures of the scorecard."""
    unmatched = int(reviews["target_source"].isna().sum()) if len(reviews) else 0
    if decisions is None or decisions["human_label"].isna().all():
        return HumanReviews(review_rows=len(reviews), unmatched=unmatched)
    human = decisions.loc[decisions["human_label"].notna()]
    model_label = human["suggested_label"].where(human["action"] == "relabel", human["label"])
    quality = human["consensus_quality"].dropna()
    return HumanReviews(
        review_rows=len(reviews), rows_reviewed=len(human),
        relabelled=int((human["human_label"] != human["label"]).sum()),
        restored=int(((human["action"] == "drop")).sum()),
        overrode_model=int(((human["action"] == "drop")
                            | (human["human_label"] != model_label)).sum()),
        unmatched=unmatched,
        consensus=summary.get("method", ""),
        mean_consensus_quality=float(quality.mean()) if len(quality) else None,
        annotator_quality=summary.get("annotator_quality", {}))


def review_labels(lake: Lake, drops: list[str], dedup: DedupResult, label_set: list[str],
                  settings: LabelsConfig, *, consensus: str = "crowdlab") -> LabelsResult:
    """Decide keep/flag/relabel/drop for every surviving row of the history, scoring only new
    or re-ingested drops unless a full review is due; quarantine dropped rows with the reason.
    People's reviews (review drop rows) then override the decision of the row they review,
    their votes combined by ``consensus`` (``crowdlab`` or ``majority``)."""
    removed = removed_by_drop(dedup)
    state, note, scored = review_model(lake, drops, removed, label_set, settings)
    reviews, review_rows = apply_human_reviews(lake, drops, dedup, removed, label_set, settings,
                                               state, consensus)
    write_json(lake.labels / STATE_FILE, state)
    return summarize(lake, drops, removed, state, note, scored, reviews, review_rows)


def review_model(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
                 label_set: list[str], settings: LabelsConfig,
                 ) -> tuple[dict[str, Any], str, list[str]]:
    """The label review's decisions (the model's): the state, a note and the drops scored."""
    state = read_state(lake)
    if state is None or state["settings"] != settings_digest(settings, label_set):
        why = "no earlier review in this lake" if state is None else "the label settings changed"
        state = review_everything(lake, drops, removed, label_set, settings, why)
        return state, state["note"], drops
    plan = refresh_drops(lake, plan_drops(lake, drops, removed, state), removed, state)
    if not plan.pending:
        note = f"no new rows: decisions carried over (last review: {state['note']})"
    else:
        new_labels = pd.concat([read_survivors(lake, drop, removed.get(drop), [*KEY, "label"])
                                ["label"] for drop in plan.pending])
        why = full_review_reason(plan, state, new_labels, settings)
        if why:
            state = review_everything(lake, drops, removed, label_set, settings, why)
            return state, state["note"], drops
        state = review_new_rows(lake, plan, removed, label_set, settings, state)
        note = state["note"]
    forget_unlisted(lake, drops, state)
    return state, note, plan.pending


def summarize(lake: Lake, drops: list[str], removed: dict[str, pd.DataFrame],
              state: dict[str, Any], note: str, scored: list[str],
              reviews: HumanReviews | None = None,
              review_rows: pd.DataFrame | None = None) -> LabelsResult:
    """The night's result: counts over the whole history (from the state), annotator agreement
    over the whole history, and how many rows the noise model judged tonight."""
    entries = [state["drops"][drop] for drop in drops]
    actions: Counter[str] = Counter()
    for entry in entries:
        actions.update(entry["actions"])
    return LabelsResult(
        decisions_path=str(lake.labels), rows=sum(e["rows"] for e in entries),
        noise_detection=note, issues=sum(e["issues"] for e in entries),
        actions=dict(actions),
        annotation=history_annotation(lake, drops, removed, review_rows),
        policy_check=state.get("policy_check"),
        rows_scored=sum(state["drops"][drop]["rows"] for drop in scored),
        reviews=reviews or HumanReviews())
