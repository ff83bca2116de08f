"""Label Studio, as the review queue and the pull of annotations see it: the labelling config
for a label set, task JSON with the model's suggestion, and the server through
``label-studio-sdk`` (the only way the project talks to it, besides files).

Label Studio is a separate service (its own virtual environment, its own pins); nothing here
imports it, only its SDK, and only inside the functions that reach the server.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from finegate.core.config import LabelStudioConfig

FROM_NAME, TO_NAME = "label", "text"  # the Choices and Text tags of the labelling config


def labelling_config(labels: list[str]) -> str:
    """The labelling config XML: the text, the current label and why the row was queued,
    and one single choice over the label set."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return f"""<View>
  <Header value="Current label: $label"/>
  <Text name="{TO_NAME}" value="$text"/>
  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInLine="true">
{choices}
  </Choices>
  <Header value="Queued because: $reason" size="6"/>
</View>
"""


def task(row: dict[str, Any], model_version: str) -> dict[str, Any]:
    """One Label Studio task: the row's data, and the model's suggestion as a prediction whose
    ``score`` is the model's confidence in it (Label Studio sorts and samples by it)."""
    data = {"text": row["text"], "label": row["label"] or "", "row_id": row["id"],
            "queue": row["queue"], "reason": row["reason"], "priority": row["priority"],
            "status": row["status"], "drop": row["drop"]}
    score = float(row["suggested_score"])
    if not math.isfinite(score):  # no model scored the row: no suggestion to show
        return {"data": data}
    choice = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
              "value": {"choices": [row["suggested_label"]]}}
    return {"data": data, "predictions": [{"model_version": model_version,
                                           "score": round(score, 6),
                                           "result": [choice]}]}


def connect(settings: LabelStudioConfig) -> Any:
    """A ``LabelStudio`` client for the configured server (the key from the environment)."""
    from label_studio_sdk import LabelStudio

    key = settings.api_key.get_secret_value()
    if not settings.url:
        raise ValueError("label_studio.url is empty; set it to the Label Studio server "
                         "(e.g. http://localhost:8080) or use the exported files")
    if not key:
        raise ValueError("no Label Studio API key: set the environment variable "
                         "LABEL_STUDIO_API_KEY (Account & Settings > Access Token)")
    return LabelStudio(base_url=settings.url.rstrip("/"), api_key=key)


def find_project(client: Any, project: str) -> Any | None:
    """The project with this id or title, or None."""
    for found in client.projects.list():
        if str(found.id) == project or found.title == project:
            return found
    return None


def ensure_project(client: Any, project: str, labels: list[str]) -> Any:
    """The project with this id or title, created with the label set's config if missing."""
    found = find_project(client, project)
    if found is not None:
        return found
    return client.projects.create(title=project, label_config=labelling_config(labels),
                                  description="Finegate review queue: rows worth a person's "
                                  "time (label issues, uncertain and disputed rows)")


def push_tasks(settings: LabelStudioConfig, labels: list[str],
               tasks: list[dict[str, Any]]) -> tuple[int, int]:
    """Import ``tasks`` into the configured project (created if missing); returns the
    project id and the tasks the server reports imported."""
    client = connect(settings)
    project = ensure_project(client, settings.project, labels)
    response = client.projects.import_tasks(id=project.id, request=tasks)
    return project.id, int(getattr(response, "task_count", None) or len(tasks))


def export_annotations(settings: LabelStudioConfig,
                       ) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Every annotated task of the configured project, as Label Studio's JSON export, and
    each user's name by id (the export names annotators by id only)."""
    client = connect(settings)
    project = find_project(client, settings.project)
    if project is None:
        raise ValueError(f"Label Studio at {settings.url} has no project {settings.project!r};"
                         " push a queue first (finegate queue) or set label_studio.project")
    raw = b"".join(client.projects.exports.download_sync(project.id, export_type="JSON",
                                                         download_all_tasks=False))
    users = {user.id: user.username or user.email or f"user-{user.id}"
             for user in client.users.list()}
    return json.loads(raw), users


def export_tasks(value: Any, where: str) -> list[dict[str, Any]]:
    """``value`` checked as a Label Studio JSON export (Export > JSON): a list of tasks, each an
    object with a ``data`` object and an ``annotations`` list; raise ValueError saying what
    ``where`` holds instead."""
    hint = "a Label Studio JSON export (Export > JSON) is a list of tasks"
    if not isinstance(value, list):
        raise ValueError(f"{where} holds a JSON {type(value).__name__}, not a Label Studio "
                         f"export: {hint}")
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise ValueError(f"{where} is not a Label Studio export: item {number} is "
                             f"{_shape(item)}, not a task with a 'data' object ({hint} with "
                             "'data' and 'annotations'; rows to ingest go in a .jsonl file)")
        if not isinstance(item.get("annotations", []), list):
            raise ValueError(f"{where} is not a Label Studio export: the 'annotations' of item "
                             f"{number} are {_shape(item['annotations'])}, not a list")
    return value


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:6]}"
    return f"a {type(value).__name__}"


def read_export(path: str | Path) -> list[dict[str, Any]]:
    """A Label Studio JSON export file (a list of tasks with their annotations)."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable Label Studio JSON export: {err}") from err
    return export_tasks(tasks, str(path))


def annotator_name(completed_by: Any, users: dict[int, str]) -> str:
    """Who answered: username, else e-mail, else ``user-<id>`` (an export gives a dict or an
    id; ``users`` maps ids to names when the server is at hand)."""
    if isinstance(completed_by, dict):
        for key in ("username", "email"):
            if completed_by.get(key):
                return str(completed_by[key])
        completed_by = completed_by.get("id")
    if not isinstance(completed_by, int | str):  # a broken export: no user to look up
        return f"user-{completed_by}"
    return users.get(completed_by, f"user-{completed_by}")


def chosen_label(annotation: Any) -> str | None:
    """The single choice of an annotation, or None (cancelled, empty, or not a choice)."""
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return None
    result = annotation.get("result")
    for item in result if isinstance(result, list) else []:
        value = item.get("value") if isinstance(item, dict) else None
        choices = value.get("choices") if isinstance(value, dict) else None
        if isinstance(choices, list) and len(choices) == 1 and item.get("type") == "choices":
            return str(choices[0])
    return None


@dataclass(frozen=True)
class ReviewedTask:
    """One exported task as a review-drop row (None when it has no usable vote, and then
    ``problem`` says why), and the annotations it used (id -> update time)."""

    row: dict[str, Any] | None
    consumed: dict[str, str]
    problem: str | None = None


def review_row(task: dict[str, Any], users: dict[int, str] | None = None) -> ReviewedTask:
    """The review-drop row of one exported task: its ``text``, ``annotator_labels`` as
    ``{annotator: label}`` (a person's latest answer wins), ``review_of`` (the queued row's id,
    else the task's), ``queue`` and ``annotated_at``; shared by ``finegate pull`` and by ingest
    of an export file dropped in the landing zone."""
    data = task.get("data") or {}
    votes: dict[str, tuple[str, str]] = {}  # annotator -> (time, label): latest answer wins
    consumed: dict[str, str] = {}
    for annotation in task.get("annotations") or []:
        label = chosen_label(annotation)
        if label is None:
            continue
        when = str(annotation.get("updated_at") or annotation.get("created_at") or "")
        consumed[str(annotation.get("id"))] = when
        name = annotator_name(annotation.get("completed_by"), users or {})
        if name not in votes or when >= votes[name][0]:
            votes[name] = (when, label)
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        return ReviewedTask(None, {}, f"Label Studio task {task.get('id')} has no text in "
                            "data.text (the labelling config's Text tag reads $text)")
    if not votes:
        return ReviewedTask(None, {}, f"Label Studio task {task.get('id')} has no completed "
                            "annotation with one choice (unanswered, skipped or empty)")
    return ReviewedTask({
        "text": text, "annotator_labels": {n: v[1] for n, v in votes.items()},
        "review_of": str(data.get("row_id") or task.get("id")),
        "queue": str(data.get("queue") or "label-studio"),
        "annotated_at": max(v[0] for v in votes.values()) or datetime.now(UTC).isoformat(),
    }, consumed)
