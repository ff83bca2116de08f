"""Label Studio, as the review queue and the pull of annotations see it: the labelling config
for a label set, task JSON with the model's suggestion, and the server through
``label-studio-sdk`` (the only way the project talks to it, besides files).

Label Studio is a separate service (its own virtual environment, its own pins); nothing here
imports it, only its SDK, and only inside the functions that reach the server.
"""

from __future__ import annotations

import json
import math
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


def read_export(path: str | Path) -> list[dict[str, Any]]:
    """A Label Studio JSON export file (a list of tasks with their annotations)."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable Label Studio JSON export: {err}") from err
    if not isinstance(tasks, list):
        raise ValueError(f"{path} holds a {type(tasks).__name__}; a Label Studio JSON export "
                         "is a list of tasks (Export > JSON)")
    return tasks
