"""Queue: the rows most worth a person's time, from the latest snapshot and the quarantine.

Four sources share the budget (``QueueConfig``): cleanlab label issues (the label review's
decisions, lowest label quality first, including rows the policy dropped to quarantine); rows
the champion is least sure of (margin or entropy); density-weighted uncertainty (uncertainty ×
mean similarity to the k nearest rows in TF-IDF space: an answer there teaches the model about
many rows); and rows whose annotators disagree (lowest agreement first). Without a champion the
TF-IDF stand-in's out-of-fold probabilities rank the rows, and the queue says so. Every row
says why it was picked. Written as Label Studio tasks (with the model's suggestion as a
prediction), its labelling config, JSONL and CSV; optionally pushed to a Label Studio project.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finegate.core import active
from finegate.core.config import LabelStudioConfig, QueueConfig, RegistrySettings, TrainConfig
from finegate.core.device import eval_max_length, pick_device
from finegate.core.label_studio import labelling_config, push_tasks, task
from finegate.core.lake import Lake, read_json, write_json
from finegate.core.results import QueueResult

SOURCES = ("label_issue", "uncertainty", "density", "disagreement")
SNAPSHOT_COLUMNS = ["id", "text", "label", "annotator_labels", "annotator_ids", "drop",
                    "source", "position"]
DECISION_COLUMNS = ["source", "position", "label", "suggested_label", "label_quality",
                    "is_label_issue", "action"]
PUSHED_FILE = "pushed.json"  # row ids already sent to Label Studio: never queued twice


@dataclass(frozen=True)
class Scorer:
    """The model that ranks rows: a saved classifier folder, or None for the TF-IDF stand-in."""

    model_dir: str | None = None
    tokenizer_dir: str | None = None
    version: str = "tfidf-stand-in"
    max_length: int = 128
    device: str = "cpu"


def review_root(lake: Lake) -> Path:
    """Queues written so far (``queues/<name>/``) and the ids pushed to Label Studio."""
    return lake.root / "review"


def read_candidates(lake: Lake) -> pd.DataFrame:
    """The latest snapshot's rows and the rows the label review dropped to quarantine, each
    with its label-review decision (``status`` says which of the two it is)."""
    if not lake.latest_snapshot.is_file():
        raise FileNotFoundError(f"lake {lake.root} has no snapshot yet; run the nightly flow "
                                "(finegate run) before building a review queue")
    data = lake.snapshot(read_json(lake.latest_snapshot)["snapshot"]) / "data"
    rows = pq.read_table(data, columns=SNAPSHOT_COLUMNS).to_pandas().assign(status="snapshot")
    decisions = read_decisions(lake)
    dropped = read_dropped(lake, decisions)
    rows = rows.merge(decisions.drop(columns="label"), on=["source", "position"], how="left")
    rows = pd.concat([rows, dropped], ignore_index=True)
    rows["is_label_issue"] = rows["is_label_issue"].fillna(False).astype(bool)
    return rows.sort_values(["source", "position"], ignore_index=True)


def read_decisions(lake: Lake) -> pd.DataFrame:
    """Every drop's label-review decisions (empty when no review ran)."""
    files = sorted(lake.labels.glob("drop-*.parquet"))
    if not files:
        return pd.DataFrame(columns=DECISION_COLUMNS)
    return pd.concat([pq.read_table(f, columns=DECISION_COLUMNS).to_pandas() for f in files],
                     ignore_index=True)


def read_dropped(lake: Lake, decisions: pd.DataFrame) -> pd.DataFrame:
    """Rows the label policy dropped to quarantine, with their text and decision."""
    files = sorted(lake.quarantine_root.glob("*/labels/*.parquet"))
    if not files:
        return pd.DataFrame(columns=[*SNAPSHOT_COLUMNS, "status"])
    quarantined = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    rows = quarantined.rename(columns={"raw": "text"})[["id", "text", "drop", "source",
                                                        "position"]]
    rows = rows.merge(decisions, on=["source", "position"], how="inner")
    return rows.assign(annotator_labels=None, annotator_ids=None,
                       status="quarantined by the label policy (drop)")


def score_rows(rows: pd.DataFrame, labels: list[str], scorer: Scorer,
               settings: QueueConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Class probabilities of the scored rows (an evenly spaced sample above
    ``max_scored_rows``), their positions in ``rows``, and which model scored them."""
    scored = np.arange(len(rows))
    if len(rows) > settings.max_scored_rows:
        scored = np.unique(np.linspace(0, len(rows) - 1, settings.max_scored_rows).astype(int))
    texts = rows["text"].iloc[scored].tolist()
    if scorer.model_dir:
        from finegate.core.inference import predict_probabilities

        probabilities = predict_probabilities(scorer.model_dir, texts, labels, scorer.max_length,
                                              scorer.device, tokenizer_dir=scorer.tokenizer_dir)
        note = f"champion {scorer.version}"
    else:
        probabilities = active.stand_in_probabilities(
            texts, rows["label"].iloc[scored].tolist(), labels)
        note = ("no champion model yet: ranked by the TF-IDF + logistic-regression stand-in "
                "(5-fold out-of-fold probabilities)")
    if len(scored) < len(rows):
        note += f"; {len(scored):,} of {len(rows):,} rows scored (evenly spaced)"
    return probabilities, scored, note


def disagreement(rows: pd.DataFrame) -> np.ndarray:
    """Per row, 1 − the share of votes for the most common vote (0 without ≥ 2 votes)."""
    out = np.zeros(len(rows))
    for n, votes in enumerate(rows["annotator_labels"]):
        if votes is not None and len(votes) > 1:
            out[n] = 1.0 - pd.Series(list(votes)).value_counts().iloc[0] / len(votes)
    return out


def source_rankings(rows: pd.DataFrame, probabilities: np.ndarray, scored: np.ndarray,
                    settings: QueueConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each source: candidate row positions, best first, and their priority scores."""
    issues = np.flatnonzero(rows["is_label_issue"].to_numpy())
    badness = 1.0 - np.nan_to_num(rows["label_quality"].to_numpy(dtype=float), nan=1.0)
    order = issues[np.argsort(-badness[issues], kind="stable")]
    uncertain = (active.margin_uncertainty(probabilities) if settings.uncertainty == "margin"
                 else active.entropy_uncertainty(probabilities))
    embeddings = active.tfidf_embeddings(rows["text"].iloc[scored].tolist())
    density = active.knn_density(embeddings, np.arange(len(scored)), k=settings.neighbours)
    weighted = active.density_weighted(uncertain, density)
    disputed = disagreement(rows)
    split = np.flatnonzero(disputed > 0)
    split = split[np.argsort(-disputed[split], kind="stable")]
    by_uncertainty = active.top_rows(uncertain, len(scored))
    by_density = active.top_rows(weighted, len(scored))
    return {"label_issue": (order, badness[order]),
            "uncertainty": (scored[by_uncertainty], uncertain[by_uncertainty]),
            "density": (scored[by_density], weighted[by_density]),
            "disagreement": (split, disputed[split])}


def allocate(rankings: dict[str, tuple[np.ndarray, np.ndarray]], settings: QueueConfig,
             exclude: set[int]) -> list[tuple[int, str, float]]:
    """Share the budget out by the configured weights; a source with too few rows passes its
    places on to the next. Returns (row position, source, priority score), in queue order."""
    shares = np.array([getattr(settings, f"{s}_share") for s in SOURCES], dtype=float)
    quota = np.floor(settings.budget * shares / shares.sum()).astype(int)
    quota[int(np.argmax(shares))] += settings.budget - quota.sum()
    picked: list[tuple[int, str, float]] = []
    taken = set(exclude)
    carry = 0
    for source, want in zip(SOURCES, quota, strict=True):
        order, scores = rankings[source]
        want, got = int(want) + carry, 0
        for row, score in zip(order, scores, strict=True):
            if got >= want:
                break
            if int(row) not in taken:
                taken.add(int(row))
                picked.append((int(row), source, float(score)))
                got += 1
        carry = want - got
    return picked


def reason(source: str, row: pd.Series, probabilities: np.ndarray | None,
           labels: list[str], score: float) -> str:
    """Why a row was queued, in words a reviewer reads next to it."""
    if source == "label_issue":
        return (f"label issue (cleanlab): labelled {row['label']!r}, the label review suggests "
                f"{row['suggested_label']!r} (label quality {row['label_quality']:.3f})")
    if source == "disagreement":
        return f"annotators disagree: {votes_of(row)} (disagreement {score:.2f})"
    top = np.argsort(-probabilities)[:2]
    unsure = (f"model unsure between {labels[top[0]]!r} ({probabilities[top[0]]:.2f}) and "
              f"{labels[top[1]]!r} ({probabilities[top[1]]:.2f})")
    if source == "density":
        return f"{unsure} in a dense region of similar rows (density-weighted {score:.3f})"
    return f"{unsure} (uncertainty {score:.3f})"


def votes_of(row: pd.Series) -> dict[str, str] | list[str]:
    """A row's votes: ``{annotator: label}`` when named, else the list (empty without)."""
    votes, ids = row["annotator_labels"], row["annotator_ids"]
    if votes is None or not len(votes):
        return []
    if ids is not None and len(ids) == len(votes):
        return dict(zip(ids, votes, strict=True))
    return list(votes)


def queue_rows(rows: pd.DataFrame, picked: list[tuple[int, str, float]],
               probabilities: np.ndarray, scored: np.ndarray, labels: list[str],
               name: str) -> pd.DataFrame:
    """The queue as a table: each picked row with its source, reason and the suggestion."""
    where = {int(r): n for n, r in enumerate(scored)}
    records = []
    for rank, (position, source, score) in enumerate(picked, start=1):
        row = rows.iloc[position]
        probs = probabilities[where[position]] if position in where else None
        suggested = labels[int(np.argmax(probs))] if probs is not None else (
            row["suggested_label"] if isinstance(row["suggested_label"], str) else row["label"])
        confidence = float(np.max(probs)) if probs is not None else float("nan")
        records.append({
            "rank": rank, "id": row["id"], "text": row["text"], "label": row["label"],
            "suggested_label": suggested, "suggested_score": confidence, "picked_by": source,
            "priority": round(score, 6), "reason": reason(source, row, probs, labels, score),
            "status": row["status"], "drop": row["drop"], "source": row["source"],
            "position": int(row["position"]), "queue": name,
            "annotator_labels": json.dumps(votes_of(row))})
    return pd.DataFrame.from_records(records)


def pushed_ids(lake: Lake) -> set[str]:
    """Row ids already sent to Label Studio."""
    path = review_root(lake) / PUSHED_FILE
    return set(read_json(path)["ids"]) if path.is_file() else set()


def queue_key(lake: Lake, labels: list[str], settings: QueueConfig, model_version: str,
              ) -> str:
    """What a queue is built from: the latest snapshot (its digest covers the label review's
    drops too), the scoring model, the settings and the label set."""
    snapshot = read_json(lake.latest_snapshot)["snapshot"] if lake.latest_snapshot.is_file() \
        else ""
    payload = json.dumps([snapshot, model_version, settings.model_dump(), labels],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def latest_queue(lake: Lake) -> dict[str, Any] | None:
    """The summary of the newest queue written (None before the first)."""
    summaries = list((review_root(lake) / "queues").glob("*/summary.json"))
    return read_json(max(summaries, key=lambda p: p.stat().st_mtime)) if summaries else None


def build_queue(lake: Lake, labels: list[str], settings: QueueConfig,
                scorer: Scorer | None = None, name: str | None = None) -> QueueResult:
    """Rank the candidates, fill the budget, write the queue's files; rows already pushed to
    Label Studio are left out."""
    scorer = scorer or Scorer()
    name = name or f"queue-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    rows = read_candidates(lake)
    probabilities, scored, note = score_rows(rows, labels, scorer, settings)
    done = pushed_ids(lake)
    exclude = {n for n, row_id in enumerate(rows["id"]) if row_id in done}
    picked = allocate(source_rankings(rows, probabilities, scored, settings), settings, exclude)
    table = queue_rows(rows, picked, probabilities, scored, labels, name)
    folder = review_root(lake) / "queues" / name
    written = write_queue_files(table, folder, labels, scorer.version)
    counts = table["picked_by"].value_counts().to_dict() if len(table) else {}
    write_json(folder / "summary.json", {"queue": name, "rows": len(table), "model": note,
                                         "by_source": counts, "candidates": len(rows),
                                         "settings": settings.model_dump(),
                                         "key": queue_key(lake, labels, settings,
                                                          scorer.version)})
    return QueueResult(name=name, folder=str(folder), rows=len(table), candidates=len(rows),
                       by_source={s: int(counts.get(s, 0)) for s in SOURCES}, model=note,
                       model_version=scorer.version, **written)


def write_queue_files(table: pd.DataFrame, folder: Path, labels: list[str],
                      model_version: str) -> dict[str, str]:
    """Label Studio tasks JSON, the labelling config XML, and the queue as JSONL and CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    records = table.to_dict(orient="records")
    paths = {"tasks_path": folder / "tasks.json", "label_config_path": folder /
             "label_config.xml", "jsonl_path": folder / "queue.jsonl",
             "csv_path": folder / "queue.csv"}
    write_json(paths["tasks_path"], [task(r, model_version) for r in records])
    paths["label_config_path"].write_text(labelling_config(labels))
    table.to_json(paths["jsonl_path"], orient="records", lines=True, force_ascii=False)
    table.to_csv(paths["csv_path"], index=False)
    return {key: str(path) for key, path in paths.items()}


def push_queue(lake: Lake, queue: QueueResult, labels: list[str],
               settings: LabelStudioConfig) -> tuple[int, int]:
    """Send a written queue's tasks to the configured Label Studio project (created if
    missing) and remember its row ids; returns the project id and tasks imported."""
    tasks = json.loads(Path(queue.tasks_path).read_text())
    project, imported = push_tasks(settings, labels, tasks)
    write_json(review_root(lake) / PUSHED_FILE,
               {"ids": sorted(pushed_ids(lake) | {t["data"]["row_id"] for t in tasks})})
    return project, imported


def champion_scorer(registry: RegistrySettings, train: TrainConfig) -> tuple[Scorer, str]:
    """The registered champion as the queue's scorer, or the TF-IDF stand-in (and why)."""
    from finegate.core.registry import client, current_champion, download_model

    connection = client(registry)
    try:
        version = current_champion(connection, registry.model_name)
    except Exception as err:  # noqa: BLE001 - a missing registry model is "no champion" too
        return Scorer(), f"no champion ({type(err).__name__}: {err})"
    if version is None:
        return Scorer(), f"model {registry.model_name} has no champion yet"
    model_dir, tokenizer_dir = download_model(connection, registry.model_name, version)
    device = pick_device(train.device)
    return Scorer(model_dir=str(model_dir), tokenizer_dir=str(tokenizer_dir),
                  version=f"{registry.model_name}/{version}",
                  max_length=eval_max_length(train, device), device=device), \
        f"champion {registry.model_name} version {version}"
