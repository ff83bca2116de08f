"""Pull: completed Label Studio annotations back into the landing zone as a review drop.

A review drop is an ordinary landing drop (``review-<UTC time>/annotations.jsonl``): one row
per reviewed task with its ``text``, ``annotator_labels`` as ``{annotator: label}`` (one vote
per annotator, named by username or e-mail), ``review_of`` (the queued row's id), ``queue``
and ``annotated_at``. The next nightly run ingests it like any other drop. Annotations already
pulled (same id, same update time) are not written again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finegate.core.lake import Lake, read_json, write_json
from finegate.core.results import PullResult

PULLED_FILE = "pulled.json"  # annotation id -> update time of what has been written


def annotator_name(completed_by: Any, users: dict[int, str]) -> str:
    """Who answered: username, else e-mail, else ``user-<id>`` (an export gives a dict or an
    id; ``users`` maps ids to names when the server is at hand)."""
    if isinstance(completed_by, dict):
        for key in ("username", "email"):
            if completed_by.get(key):
                return str(completed_by[key])
        completed_by = completed_by.get("id")
    return users.get(completed_by, f"user-{completed_by}")


def chosen_label(annotation: dict[str, Any]) -> str | None:
    """The single choice of an annotation, or None (cancelled, empty, or not a choice)."""
    if annotation.get("was_cancelled"):
        return None
    for item in annotation.get("result") or []:
        choices = (item.get("value") or {}).get("choices") or []
        if item.get("type") == "choices" and len(choices) == 1:
            return str(choices[0])
    return None


def review_row(task: dict[str, Any], users: dict[int, str],
               pulled: dict[str, str]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The review-drop row of one exported task (None without a new usable vote), and the
    annotations it consumed (id -> update time)."""
    data = task.get("data") or {}
    votes: dict[str, tuple[str, str]] = {}  # annotator -> (time, label): latest answer wins
    consumed: dict[str, str] = {}
    for annotation in task.get("annotations") or []:
        label = chosen_label(annotation)
        when = str(annotation.get("updated_at") or annotation.get("created_at") or "")
        if label is None:
            continue
        consumed[str(annotation.get("id"))] = when
        name = annotator_name(annotation.get("completed_by"), users)
        if name not in votes or when >= votes[name][0]:
            votes[name] = (when, label)
    if not votes or not data.get("text") or all(pulled.get(a) == w for a, w in consumed.items()):
        return None, {}
    return {"text": data["text"], "annotator_labels": {n: v[1] for n, v in votes.items()},
            "review_of": str(data.get("row_id") or task.get("id")),
            "queue": str(data.get("queue") or "label-studio"),
            "annotated_at": max(v[0] for v in votes.values()) or
            datetime.now(UTC).isoformat()}, consumed


def pull_annotations(tasks: list[dict[str, Any]], landing: str | Path, lake: Lake,
                     users: dict[int, str] | None = None, now: datetime | None = None,
                     ) -> PullResult:
    """Write the tasks' new votes as a review drop in ``landing``; remember what was pulled."""
    state_path = lake.root / "review" / PULLED_FILE
    pulled = read_json(state_path)["annotations"] if state_path.is_file() else {}
    rows, consumed, skipped = [], {}, 0
    for task in tasks:
        row, used = review_row(task, users or {}, pulled)
        if row is None:
            skipped += 1
            continue
        rows.append(row)
        consumed.update(used)
    if not rows:
        return PullResult(drop=None, path=None, rows=0, votes=0, annotators=[],
                          skipped=skipped)
    drop = f"review-{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"
    folder = Path(landing) / drop
    if folder.exists():
        raise FileExistsError(f"landing drop {folder} exists already; pull again in a second")
    partial = Path(landing) / f".{drop}.partial"  # a dot folder is not a drop: never ingested
    partial.mkdir(parents=True)
    (partial / "annotations.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    partial.rename(folder)  # the drop appears whole
    path = folder / "annotations.jsonl"
    write_json(state_path, {"annotations": {**pulled, **consumed}})
    names = sorted({n for r in rows for n in r["annotator_labels"]})
    return PullResult(drop=drop, path=str(path), rows=len(rows),
                      votes=sum(len(r["annotator_labels"]) for r in rows), annotators=names,
                      skipped=skipped)
