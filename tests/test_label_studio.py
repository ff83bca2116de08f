"""The review loop against a real Label Studio server on loopback: push a queue through the SDK,
two named people answer through the API, ``finegate pull`` brings their votes back as a review
drop, and ingest reads the named votes; and the nightly flow, with ``label_studio.url`` set,
pulls people's answers itself and relabels the row in the snapshot, scorecard and model card.

The server is PyPI ``label-studio`` in its own virtual environment (``make label-studio``
creates ``.ls-venv``; ``LABEL_STUDIO_BIN`` points elsewhere). The test is skipped, saying why,
only when no server binary is installed or the server does not start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from finegate.cli import app
from finegate.core.config import Config, LabelStudioConfig, QueueConfig
from finegate.core.label_studio import ensure_project
from finegate.core.lake import Lake
from finegate.tasks.clean import clean_drop
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.queue import build_queue, push_queue
from tests.factories import LABEL_SET, LABELS, curate, noisy_landing, topic_rows

REPO = Path(__file__).resolve().parents[1]
ADMIN, PASSWORD, TOKEN = "admin@finegate.invalid", "finegate-test-pass", "finegate-test-token"
START_TIMEOUT_S = 300  # a fresh database runs ~100 migrations: minutes on a busy 2-core VM


def server_binary() -> Path | None:
    """The ``label-studio`` executable: LABEL_STUDIO_BIN, else the repo's ``.ls-venv``."""
    given = os.environ.get("LABEL_STUDIO_BIN")
    for candidate in ([Path(given)] if given else []) + [REPO / ".ls-venv/bin/label-studio"]:
        if candidate.is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Label Studio server on a free loopback port with an admin and a legacy API token."""
    binary = server_binary()
    if binary is None:
        pytest.skip("Label Studio server not installed: run `make label-studio` (creates "
                    ".ls-venv) or set LABEL_STUDIO_BIN to a label-studio executable")
    data = tmp_path_factory.mktemp("label-studio")
    template = binary.parents[1] / "template"  # migrated by `make label-studio`: starts fast
    if (template / "label_studio.sqlite3").is_file():
        shutil.copytree(template, data, dirs_exist_ok=True)
    port, log = free_port(), (data / "server.log").open("w")
    env = {**os.environ, "LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_BASE_DATA_DIR": str(data)}
    server = subprocess.Popen(
        [str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port",
         str(port), "--data-dir", str(data), "--username", ADMIN, "--password", PASSWORD,
         "--user-token", TOKEN, "--enable-legacy-api-token"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = (data / "server.log").read_text()[-1500:]
                pytest.skip(f"Label Studio server did not start on {url} within "
                            f"{START_TIMEOUT_S} s (exit code {server.poll()}); log tail:\n{tail}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and its children
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def row_ids(tasks_path: str) -> set[str]:
    return {t["data"]["row_id"] for t in json.loads(Path(tasks_path).read_text())}


def answer(client, task_id: int, label: str, user_id: int | None = None) -> None:
    """Complete one task through the API, as the admin or on behalf of ``user_id``."""
    extra = {} if user_id is None else {"completed_by": user_id}
    client.annotations.create(id=task_id, result=[{
        "from_name": "label", "to_name": "text", "type": "choices",
        "value": {"choices": [label]}}], **extra)


def test_queue_to_label_studio_and_back(label_studio, tmp_path, monkeypatch):
    from label_studio_sdk import LabelStudio

    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    noisy_landing(landing)
    curate(landing, lake, noise=True, drops=("day1",))
    studio = LabelStudioConfig(url=label_studio, project="finegate-test", api_key=TOKEN)

    queue = build_queue(lake, LABELS, QueueConfig(budget=6), name="queue-test")
    project, imported = push_queue(lake, queue, LABELS, studio)
    assert imported == queue.rows == 6
    client = LabelStudio(base_url=label_studio, api_key=TOKEN)
    tasks = list(client.tasks.list(project=project, fields="all"))
    assert len(tasks) == 6 and {t.data["queue"] for t in tasks} == {"queue-test"}
    again = build_queue(lake, LABELS, QueueConfig(budget=6), name="queue-next")
    assert not row_ids(queue.tasks_path) & row_ids(again.tasks_path)  # pushed: not again

    # a second person; both answer the first three tasks (hers completed_by her)
    bea = client.users.create(username="bea", email="bea@finegate.invalid", password="x-pass-1")
    truth = {t.id: (t.data["row_id"], t.data["text"]) for t in tasks[:3]}
    for task_id in truth:
        answer(client, task_id, "politics")
        answer(client, task_id, "tech", user_id=bea.id)

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({
        "landing_path": str(landing), "lake_path": str(lake.root), "labels": LABELS,
        "label_studio": {"url": label_studio, "project": "finegate-test"}}))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    pulled = CliRunner().invoke(app, ["pull", "--config", str(config_file)])
    assert pulled.exit_code == 0, pulled.output
    drop = next(p.name for p in landing.iterdir() if p.name.startswith("review-"))
    rows = [json.loads(line) for line in (landing / drop / "annotations.jsonl").open()]
    names = {ADMIN, "bea"}
    assert {r["review_of"] for r in rows} == {row_id for row_id, _ in truth.values()}
    assert all(set(r["annotator_labels"]) == names and r["queue"] == "queue-test"
               and r["annotated_at"] for r in rows)
    assert all(r["annotator_labels"] == {ADMIN: "politics", "bea": "tech"} for r in rows)

    # the next run's ingest and clean read the named votes
    ingest_drop(landing, drop, lake)
    clean_drop(drop, lake, LABEL_SET)
    silver = pq.read_table(lake.silver(drop)).to_pandas()
    assert len(silver) == 3
    assert all(sorted(ids) == sorted(names) for ids in silver["annotator_ids"])
    assert (CliRunner().invoke(app, ["pull", "--config", str(config_file)]).output
            .startswith("no new annotations"))


@pytest.mark.usefixtures("prefect_harness")
def test_the_nightly_run_pulls_annotations_and_relabels_the_row(label_studio,
                                                                 small_config: Config) -> None:
    """Two people relabel a day2 row in Label Studio; the next night (``label_studio.url``
    set) pulls their votes into a review drop, ingests it, and their consensus relabels the row
    with lineage in the snapshot, the scorecard and the model card; the night's own queue is
    pushed to the same project."""
    from label_studio_sdk import LabelStudio

    from finegate.flows.nightly import run_nightly

    reviewed = topic_rows(30, seed=1, prefix="j")[5]  # a JSONL row of day2 (dirty_landing)
    other = next(label for label in LABELS if label != reviewed["label"])
    studio = LabelStudioConfig(url=label_studio, project="finegate-nightly", api_key=TOKEN)
    client = LabelStudio(base_url=label_studio, api_key=TOKEN)
    project = ensure_project(client, studio.project, LABELS)
    client.projects.import_tasks(id=project.id, request=[{"data": {
        "text": reviewed["text"], "label": reviewed["label"], "row_id": reviewed["id"],
        "queue": "label-issues", "reason": "a label issue"}}])
    [task] = client.tasks.list(project=project.id)
    dan = client.users.create(username="dan", email="dan@finegate.invalid", password="x-pass-2")
    answer(client, task.id, other)
    answer(client, task.id, other, user_id=dan.id)

    config = small_config.model_copy(update={"label_studio": studio})
    result = run_nightly(config)
    landing = Path(config.landing_path)
    [drop] = [p.name for p in landing.iterdir() if p.name.startswith("review-")]
    assert drop in result.drops_ingested
    [row] = [json.loads(line) for line in (landing / drop / "annotations.jsonl").open()]
    assert row["annotator_labels"] == {ADMIN: other, "dan": other}
    data = pq.read_table(result.snapshot.data_path).to_pandas().set_index("id")
    assert data.loc[reviewed["id"], "label"] == other
    assert {"human_review", f"reviewed_by:{ADMIN}+dan", "review_queue:label-issues",
            f"human_relabelled_from:{reviewed['label']}"} <= set(data.loc[reviewed["id"],
                                                                          "flags"])
    card = json.loads(Path(result.scorecard_path).read_text())
    assert card["human_reviewed_rows"] == 1 and card["human_relabels"] == 1
    assert card["accounting"]["holds"], card["accounting"]
    from mlflow import MlflowClient

    registry = MlflowClient(tracking_uri=config.tracking_uri(), registry_uri=config.tracking_uri())
    version = registry.get_model_version(config.model_name, result.registered.version)
    assert "human review: 1 rows decided by people (1 relabelled" in version.description
    queued = list(client.tasks.list(project=project.id))  # the night's queue, pushed after
    assert len(queued) > 1 and {t.data["queue"] for t in queued} - {"label-issues"}
