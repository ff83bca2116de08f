"""Quality: the snapshot's scorecard and the accounting identity that proves nothing was lost.

``scorecard.json`` (in the snapshot folder) holds rows, label counts and coverage, class balance
``1 - Σ_c (n_c/N - 1/C)^2`` over the configured labels, exact/near duplicate ratios, conflicts,
noise ratio, annotation consistency, empty/missing ratios, length statistics, deltas against the
previous snapshot, and the accounting of every row read: curated + quarantined + duplicates.
Rows read are counted from the landing files at ingest (lines, CSV records, Parquet footers,
files), not from what the readers returned, so a reader that drops a row breaks the identity.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from finegate.core.drift import drift_metrics, oov_rate, vocabulary, word_counts
from finegate.core.filters import RULES, filter_name
from finegate.core.history import previous_snapshot
from finegate.core.lake import Lake, read_json, write_json
from finegate.core.quarantine import quarantine_reasons
from finegate.core.results import (
    Accounting,
    DedupResult,
    IngestResult,
    LabelsResult,
    LeakageResult,
    QualityResult,
    SnapshotResult,
)
from finegate.core.schemas import parquet_rows
from finegate.core.splits import label_split_shares

EMPTY_REASONS = ("missing text", "empty text after cleaning")


class AccountingError(RuntimeError):
    """Rows read do not equal rows curated + quarantined + dropped as duplicates."""


def account_rows(rows_read: int, snapshot: SnapshotResult, lake: Lake, *,
                 retracted: int = 0) -> Accounting:
    """Count curated, quarantined and duplicate rows on disk against the rows read (counted
    from the landing files at ingest, independently of parsing). ``retracted``: rows of drops
    removed from the landing zone since, reported but outside the identity."""
    return accounting_of(rows_read, snapshot, quarantine_reasons(lake, snapshot.drops),
                         retracted)


def accounting_of(rows_read: int, snapshot: SnapshotResult, reasons: pd.Series,
                  retracted: int) -> Accounting:
    """The accounting from quarantine reasons already read (one read per scorecard)."""
    return Accounting(rows_read=rows_read, curated=parquet_rows(snapshot.data_path),
                      quarantined=len(reasons),
                      duplicates=parquet_rows(snapshot.duplicates_path), retracted=retracted)


def check_ingest_count(ingested: IngestResult) -> None:
    """Raise :class:`AccountingError` when a drop's parsed rows differ from the rows counted in
    its files: a reader lost (or invented) rows, and the drop must not be recorded as read."""
    if ingested.miscounted:
        raise AccountingError(
            f"ingest of drop {ingested.drop!r} does not add up: "
            + "; ".join(ingested.miscounted)
            + ". The reader disagrees with the row count of the file itself, so rows would be "
            "lost silently; the drop is not recorded, and the run stops. This is a bug in "
            "Finegate's reader: report it with the file.")


def check_accounting(accounting: Accounting) -> None:
    """Raise :class:`AccountingError` with the numbers when the identity does not hold."""
    if not accounting.holds:
        a = accounting
        raise AccountingError(
            f"rows read ({a.rows_read}) != curated ({a.curated}) + quarantined "
            f"({a.quarantined}) + duplicates ({a.duplicates}): rows were lost or "
            "counted twice; inspect the lake's quarantine/ and the snapshot's duplicates/"
        )


def class_balance(label_counts: dict[str, int], labels: list[str]) -> float:
    """``1 - Σ_c (n_c/N - 1/C)^2`` over the configured labels: 1 is perfectly balanced."""
    total = sum(label_counts.values())
    if total == 0:
        return 0.0
    share = 1 / len(labels)
    return 1 - sum((label_counts.get(c, 0) / total - share) ** 2 for c in labels)


def length_stats(lengths: pd.Series) -> dict[str, float]:
    """Min, percentiles, mean and max of a length column."""
    if lengths.empty:
        return {k: 0.0 for k in ("min", "p05", "median", "p95", "max", "mean")}
    q = lengths.quantile([0.05, 0.5, 0.95])
    return {"min": float(lengths.min()), "p05": float(q[0.05]), "median": float(q[0.5]),
            "p95": float(q[0.95]), "max": float(lengths.max()), "mean": float(lengths.mean())}


def vocabulary_coverage(data: pd.DataFrame) -> float | None:
    """Share of the test split's word tokens that occur in the train split's vocabulary."""
    test = data.loc[data["split"] == "test", "text"]
    if test.empty:
        return None
    return 1 - oov_rate(test, vocabulary(data.loc[data["split"] == "train", "text"]))


def label_distribution(counts: dict[str, int]) -> dict[str, float]:
    """Share of rows per label."""
    total = sum(counts.values()) or 1
    return {label: n / total for label, n in counts.items()}


def filter_counts(reasons: pd.Series, flags: pd.Series) -> dict[str, dict[str, int]]:
    """Per heuristic filter: rows it quarantined (reasons ``filter:<name>: ...``) and curated
    rows it flagged (flags ``filter:<name>``)."""
    dropped = reasons.dropna().map(filter_name).value_counts()
    flagged = pd.Series([filter_name(f) for row in flags for f in (row if row is not None
                                                                  else [])]).value_counts()
    return {name: {"dropped": int(dropped.get(name, 0)), "flagged": int(flagged.get(name, 0))}
            for name in RULES}


def scorecard_deltas(current: dict[str, Any], previous: dict[str, Any] | None,
                     ) -> dict[str, Any]:
    """Changes against the previous snapshot's scorecard: scalar metrics and label shift."""
    if previous is None:
        return {"previous_snapshot": None}
    scalars = {k: v - previous[k] for k, v in current.items()
               if isinstance(v, int | float) and not isinstance(v, bool)
               and isinstance(previous.get(k), int | float)}
    now = label_distribution(current["label_counts"])
    before = label_distribution(previous.get("label_counts", {}))
    shift = 0.5 * sum(abs(now.get(c, 0) - before.get(c, 0)) for c in now.keys() | before.keys())
    return {"previous_snapshot": previous.get("snapshot"), **scalars,
            "label_distribution_shift": shift,
            "median_words": current["length_words"]["median"]
            - previous.get("length_words", {}).get("median", 0)}


def build_scorecard(rows_read: int, snapshot: SnapshotResult, lake: Lake, labels: list[str],
                    dedup: DedupResult, review: LabelsResult, *, retracted: int = 0,
                    leakage: LeakageResult | None = None) -> dict[str, Any]:
    """All quality metrics of a snapshot, plus the accounting of every row read."""
    columns = ["id", "text", "label", "split", "drop"]
    data = pq.read_table(snapshot.data_path, columns=[*columns, "flags"]).to_pandas()
    previous = previous_snapshot(lake, snapshot.digest)
    previous_data = (pq.read_table(previous / "data", columns=columns).to_pandas()
                     if previous else None)
    counts = {c: int((data["label"] == c).sum()) for c in labels}
    reasons = quarantine_reasons(lake, snapshot.drops)
    accounting = accounting_of(rows_read, snapshot, reasons, retracted)
    read, deduped = max(rows_read, 1), max(dedup.rows_in, 1)
    card = {
        "snapshot": snapshot.digest,
        "rows": len(data),
        "label_counts": counts,
        "labels_present": sum(1 for n in counts.values() if n > 0),
        "class_balance": class_balance(counts, labels),
        "max_class_share": max(counts.values()) / len(data) if len(data) else 0.0,
        "min_class_rows": min(counts.values()),
        "duplicate_ids": int(data["id"].duplicated().sum()),
        "coverage": {"labels": sum(1 for n in counts.values() if n > 0) / len(labels),
                     "vocabulary": vocabulary_coverage(data)},
        "duplicate_ratio": dedup.duplicates / deduped,
        "exact_duplicate_ratio": dedup.exact_duplicates / deduped,
        "near_duplicate_ratio": dedup.near_duplicates / deduped,
        "conflicts": dedup.conflicts,
        "noise_ratio": review.issues / max(review.rows, 1),
        "label_actions": review.actions,
        "noise_detection": review.noise_detection,
        # did the label policy help the TF-IDF stand-in on held-out rows (None: not checked)
        "label_policy_check": review.policy_check,
        "cleaning_gain": cleaning_gain(review.policy_check),
        "annotation": asdict(review.annotation),
        # None without annotator labels: no agreement was measured (the gate skips it)
        "annotation_consistency": review.annotation.unanimous_share,
        "annotation_alpha": review.annotation.krippendorff_alpha,
        # people's reviews (review drops): rows they decide and relabel, consensus, annotators
        "human_reviewed_rows": review.reviews.rows_reviewed,
        "human_relabels": review.reviews.relabelled,
        "human_review": asdict(review.reviews),
        "empty_ratio": float(reasons.isin(EMPTY_REASONS).sum()) / read,
        "missing_label_ratio": float(reasons.eq("missing label").sum()) / read,
        "quarantine_ratio": accounting.quarantined / read,
        "filtered_ratio": float(reasons.str.startswith("filter:").sum()) / read,
        "filters": filter_counts(reasons, data["flags"]),
        "length_chars": length_stats(data["text"].str.len()),
        "length_words": length_stats(word_counts(data["text"])),
        "accounting": {**asdict(accounting), "holds": accounting.holds},
    }
    card.update(leakage_metrics(leakage))
    card.update(split_metrics(data, Path(snapshot.path) / "manifest.json"))
    card["deltas"] = scorecard_deltas(
        card, read_json(previous / "scorecard.json") if previous else None)
    card["drift"] = drift_metrics(data, previous_data)
    return card


def cleaning_gain(check: dict[str, Any] | None) -> float | None:
    """The proxy check's macro-F1 gain of the applied policy (auto: of the best candidate)."""
    if not check or not check.get("effects"):
        return None
    effects = check["effects"]
    effect = effects.get(check["chosen"]) or max(
        effects.values(), key=lambda e: -1.0 if e["gain"] is None else e["gain"])
    return effect["gain"]


def scorecard_table(card: dict[str, Any]) -> list[dict[str, Any]]:
    """The scorecard's headline metrics as rows for a Prefect table artifact."""
    deltas = card["deltas"]
    return [{"metric": k, "value": round(v, 4) if isinstance(v, float) else v,
             "change": round(deltas[k], 4) if isinstance(deltas.get(k), float) else deltas.get(k)}
            for k, v in card.items() if isinstance(v, int | float) and not isinstance(v, bool)]


def leakage_metrics(leakage: LeakageResult | None) -> dict[str, Any]:
    """Golden rows found in the snapshot: in the train split (the gate's metric), anywhere."""
    if leakage is None:
        return {"golden_train_leaks": 0, "golden_leaks": 0, "cross_split_exact": 0,
                "cross_split_near": 0, "leakage": None}
    return {"golden_train_leaks": leakage.leaked_by_split.get("train", 0),
            "golden_leaks": len(leakage.leaked_golden),
            # snapshot rows repeated across its splits (pairs): exact, and near at
            # dedup.related_threshold; per pair of splits in leakage.cross_split_by_splits
            "cross_split_exact": leakage.cross_split_exact,
            "cross_split_near": leakage.cross_split_near,
            "leakage": {"golden_rows": leakage.golden_rows, "by_split": leakage.leaked_by_split,
                        "cross_split_by_splits": leakage.cross_split_by_splits,
                        "pairs": leakage.leakage_path}}


def split_metrics(data: pd.DataFrame, manifest_path: Path) -> dict[str, Any]:
    """The split strategy, each label's share per split, and the largest gap between a label's
    share and the split's share (None under ``time``, whose shares follow the drops)."""
    plan = read_json(manifest_path).get("split", {}) if manifest_path.is_file() else {}
    target = plan.get("shares")
    by_label = label_split_shares(data["label"], data["split"]) if len(data) else {}
    deviation = (max((abs(v - target[s]) for row in by_label.values() for s, v in row.items()),
                     default=0.0) if target else None)
    return {"split_share_deviation": deviation,
            "split": {"strategy": plan.get("strategy", "hash"), "shares": target,
                      "label_shares": by_label,
                      **{k: plan[k] for k in ("test_drops", "validation_drops", "fallback")
                         if k in plan}}}


def write_scorecard(rows_read: int, snapshot: SnapshotResult, lake: Lake, labels: list[str],
                    dedup: DedupResult, review: LabelsResult, *, retracted: int = 0,
                    leakage: LeakageResult | None = None) -> QualityResult:
    """Write ``scorecard.json`` beside the snapshot; fail if the accounting does not hold."""
    scorecard = build_scorecard(rows_read, snapshot, lake, labels, dedup, review,
                                retracted=retracted, leakage=leakage)
    path = write_json(Path(snapshot.path) / "scorecard.json", scorecard)
    accounting = Accounting(**{k: v for k, v in scorecard["accounting"].items() if k != "holds"})
    check_accounting(accounting)
    return QualityResult(scorecard_path=str(path), accounting=accounting)
