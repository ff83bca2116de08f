"""What stages hand each other: small frozen records of paths, counts and digests.

A stage reads what it needs from the lake through these paths; no DataFrame and no string-keyed
dict crosses a stage boundary. Prefect persists them as task results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SplitError(RuntimeError):
    """The snapshot's split cannot train or evaluate a model."""


@dataclass(frozen=True)
class IngestResult:
    """What ingesting one drop produced. ``rows_read`` is counted from the files themselves
    (lines, CSV records, Parquet footers, .txt files), independently of parsing."""

    drop: str
    bronze_path: str
    quarantine_path: str
    rows_read: int
    rows_bronze: int
    rows_quarantined: int
    # files whose parsed rows differ from their counted rows: "<file> holds N row(s), ..."
    miscounted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CleanResult:
    """What cleaning one drop produced."""

    drop: str
    silver_path: str
    quarantine_path: str
    rows_in: int
    rows_silver: int
    rows_quarantined: int


@dataclass(frozen=True)
class DedupResult:
    """Where the dedup log and conflicts are, and their counts."""

    duplicates_path: str
    conflicts_path: str
    rows_in: int
    exact_duplicates: int
    near_duplicates: int
    conflicts: int
    rows_hashed: int = 0  # rows whose signatures were computed tonight (new rows only)

    @property
    def duplicates(self) -> int:
        """All rows the dedup log removes."""
        return self.exact_duplicates + self.near_duplicates


@dataclass(frozen=True)
class Annotation:
    """Annotator agreement over the rows that carry annotator votes."""

    rows_with_annotators: int = 0
    unanimous_share: float | None = None
    mean_annotators: float | None = None
    krippendorff_alpha: float | None = None
    per_annotator: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HumanReviews:
    """People's reviews (rows of review drops) applied over the label review's decisions."""

    review_rows: int = 0  # review rows read in the history (most are duplicates of their row)
    rows_reviewed: int = 0  # surviving rows whose label a review decides
    relabelled: int = 0  # reviewed rows whose label changed (from the given label)
    restored: int = 0  # reviewed rows the label review would have dropped
    overrode_model: int = 0  # reviewed rows where the person's label beats the model's action
    unmatched: int = 0  # review rows whose reviewed row is no longer in the history
    consensus: str = ""  # how the votes were combined (CROWDLAB or majority, and why)
    mean_consensus_quality: float | None = None
    annotator_quality: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelsResult:
    """Label decisions on disk and the label-quality metrics for the scorecard."""

    decisions_path: str
    rows: int
    noise_detection: str
    issues: int
    actions: dict[str, int]
    annotation: Annotation
    rows_scored: int = 0  # rows the noise model judged tonight (new rows only, unless full)
    reviews: HumanReviews = field(default_factory=HumanReviews)
    # the label policy's proxy check on the last reviewed rows (finegate/core/policy_check.py)
    policy_check: dict[str, Any] | None = None


@dataclass(frozen=True)
class SnapshotResult:
    """A curated snapshot on disk, with its rows per split."""

    digest: str
    path: str
    data_path: str
    duplicates_path: str
    rows: int
    drops: list[str]
    split_rows: dict[str, int] = field(default_factory=dict)

    def check_trainable(self) -> None:
        """Raise :class:`SplitError` when the split leaves nothing to train or test on."""
        empty = [s for s in ("train", "test") if not self.split_rows.get(s)]
        if empty:
            raise SplitError(f"the snapshot at {self.data_path} has no {' and no '.join(empty)}"
                             f" rows ({self.split_rows}); add data or change the split shares "
                             "in the config")


@dataclass(frozen=True)
class Accounting:
    """Every row read ends curated, quarantined or logged as a duplicate: the identity.
    ``retracted``: rows read from drops removed from the landing zone since (not in the
    identity: they left the history)."""

    rows_read: int
    curated: int
    quarantined: int
    duplicates: int
    retracted: int = 0

    @property
    def holds(self) -> bool:
        """Whether rows read = curated + quarantined + duplicates."""
        return self.rows_read == self.curated + self.quarantined + self.duplicates


@dataclass(frozen=True)
class QualityResult:
    """Where the scorecard is, and the accounting it holds."""

    scorecard_path: str
    accounting: Accounting


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict and where its details are."""

    passed: bool
    gate_path: str
    data_docs: str
    failures: list[str]
    warnings: list[str]
    skipped: list[str]


# --- training side -----------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneResult:
    """The trained model on disk and how it was trained."""

    model_dir: str
    device: str
    steps: int
    train_rows: int
    train_loss: float
    best_validation_macro_f1: float | None
    stopped_early: bool
    resumed_from: int
    seconds: float
    samples_per_second: float
    params: dict[str, Any]


@dataclass(frozen=True)
class EvaluationResult:
    """Headline metrics and where the full report is."""

    accuracy: float
    macro_f1: float
    test_rows: int
    report_path: str
    golden_macro_f1: float | None = None
    golden_rows: int = 0


@dataclass(frozen=True)
class RegisterResult:
    """The MLflow run and registered model version."""

    tracking_uri: str
    run_id: str
    model_name: str
    version: str
    aliases: list[str]
    evaluation_report: str | None = None  # the evaluation.json this version was judged on
    decided: bool = True  # False: a run stopped before the champion/challenger decision


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger became champion, and why."""

    promote: bool
    reasons: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportInputs:
    """Everything the run's HTML report reads: paths into the lake, and the run's names."""

    run_name: str
    run_dir: str
    scorecard_path: str
    gate_path: str
    data_path: str
    duplicates_path: str
    decisions_path: str
    quarantine_dir: str
    evaluation_path: str | None = None
    mlflow: str = ""
    drops: list[str] = field(default_factory=list)  # drops ingested that night (finegate status)


@dataclass(frozen=True)
class LeakageResult:
    """Golden rows the snapshot also holds: per split, and which golden rows (to leave out of
    the golden metric); the pairs are in ``leakage_path``."""

    leakage_path: str
    golden_rows: int
    leaked_by_split: dict[str, int]
    leaked_golden: list[int]
    # pairs of snapshot rows in different splits: same content, or an estimated Jaccard at or
    # above dedup.related_threshold; per pair of splits ("train|test": n)
    cross_split_exact: int = 0
    cross_split_near: int = 0
    cross_split_by_splits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueResult:
    """A review queue written to the lake: its files, and how many rows each source gave."""

    name: str
    folder: str
    rows: int
    candidates: int
    by_source: dict[str, int]
    model: str  # which model ranked the rows (the champion, or the TF-IDF stand-in and why)
    model_version: str
    tasks_path: str
    label_config_path: str
    jsonl_path: str
    csv_path: str


@dataclass(frozen=True)
class PullResult:
    """Completed annotations written to the landing zone as a review drop."""

    drop: str | None  # None: nothing new to write
    path: str | None
    rows: int
    votes: int
    annotators: list[str]
    skipped: int  # tasks without a usable vote (cancelled, empty, or already pulled)
