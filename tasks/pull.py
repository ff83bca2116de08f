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

from finegate.core.label_studio import review_row
from finegate.core.lake import Lake, read_json, write_json
from finegate.core.results import PullResult

PULLED_FILE = "pulled.json"  # annotation id -> update time of what has been written


def pull_annotations(tasks: list[dict[str, Any]], landing: str | Path, lake: Lake,
                     users: dict[int, str] | None = None, now: datetime | None = None,
                     ) -> PullResult:
    """Write the tasks' new votes as a review drop in ``landing``; remember what was pulled."""
    state_path = lake.root / "review" / PULLED_FILE
    pulled = read_json(state_path)["annotations"] if state_path.is_file() else {}
    rows, consumed, skipped = [], {}, 0
    for task in tasks:
        reviewed = review_row(task, users)
        if reviewed.row is None or all(pulled.get(a) == w
                                       for a, w in reviewed.consumed.items()):
            skipped += 1  # no usable vote, or nothing new since the last pull
            continue
        rows.append(reviewed.row)
        consumed.update(reviewed.consumed)
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
