"""The production path, run for real: the compose stack as local processes (``deploy/stack.py``).

Postgres, a Prefect server and an MLflow server on it, a Dask scheduler with two workers and a
Prefect process worker on the ``finegate`` pool; ``prefect deploy`` from ``deploy/prefect.yaml``,
two triggers of the deployment, the worker runs them one after the other; the UIs are looked at
in headless Chromium. Addresses, commands and paths come from the deployment files (the stack
reads them), never from this test. Screenshots go to ``tests/artifacts/stack/``.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.stack import Stack, missing_requirements
from tests.factories import LABELS, SYNTHETIC_TEXT_FILTERS

ARTIFACTS = Path(__file__).parent / "artifacts" / "stack"
BROWSER = [shutil.which("chromium") or "chromium", "--headless=new", "--no-sandbox",
           "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1600"]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

pytestmark = pytest.mark.skipif(
    bool(missing_requirements()),
    reason=f"needs PostgreSQL's server (missing: {', '.join(missing_requirements())}; "
           "Debian: apt-get install postgresql, or `make test` as root installs it)")


@dataclass
class Runs:
    """The two triggered runs, and the state of each seen every half second until both end."""

    deployment: str
    first: str
    second: str
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (first, second) states
    seconds: float = 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Stack]:
    """The whole stack, every process stopped by its id at the end (also when a test fails)."""
    root = tmp_path_factory.mktemp("stack")
    stack = Stack(root, ports="free", env={"PREFECT_WORKER_QUERY_SECONDS": "1"},
                  config_overrides={
                      "labels": LABELS, "label_quality": {"policy": "flag"},
                      "filters": SYNTHETIC_TEXT_FILTERS,
                      "train": {"model_path": str(tiny_model_dir), "device": "cpu",
                                "cpu_max_steps": 3, "cpu_max_length": 32,
                                "cpu_batch_size": 8}})
    print(f"stack in {root}, logs in {stack.logs}")
    try:
        yield stack.start()
    finally:
        stack.stop()
        shutil.copytree(stack.logs, ARTIFACTS / "logs", dirs_exist_ok=True)
        alive = [name for name, process in stack.processes.items() if process.poll() is None]
        assert not alive, f"still running after stop: {alive}"


@pytest.fixture(scope="module")
def runs(stack: Stack) -> Runs:
    """Deploy, trigger once, trigger again while the first runs; return once the first ended
    and the second started (the last test waits for the second to end)."""
    from tests.factories import write_dirty_landing

    write_dirty_landing(stack.landing)
    deployment = stack.deploy()
    started = time.monotonic()
    first = stack.trigger(deployment)
    wait_for(lambda: state(stack, first) in {"RUNNING"} | FINAL, "the first run to start", 180)
    runs = Runs(deployment, first, stack.trigger(deployment))
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        second = stack.flow_run(runs.second)["state"]
        runs.seen.append((state(stack, first), second["type"], second["name"]))
        if runs.seen[-1][0] in FINAL and runs.seen[-1][1] in {"RUNNING"} | FINAL:
            break
        time.sleep(0.5)
    runs.seconds = time.monotonic() - started
    print(f"first run ended, second started {runs.seconds:.0f} s after the first trigger; "
          "states seen:", [seen for i, seen in enumerate(runs.seen)
                           if i == 0 or seen != runs.seen[i - 1]])
    return runs


def wait_for(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.5)


def state(stack: Stack, run_id: str) -> str:
    return stack.flow_run(run_id)["state"]["type"]


def flow_logs(stack: Stack, run_id: str) -> str:
    """Every log line of a flow run (its prints included), page by page."""
    lines: list[str] = []
    while page := httpx.post(f"{stack.prefect_api}/logs/filter", json={
            "logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC",
            "limit": 200, "offset": len(lines)}).json():
        lines += [entry["message"] for entry in page]
    return "\n".join(lines)


def sql(stack: Stack, database: str, query: str) -> list[tuple[Any, ...]]:
    """A query straight to the stack's Postgres (proof that the service stores its data there)."""
    import psycopg2

    url = stack.environment("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"]
    user, password, host, port = re.search(r"//(\w+):([^@]+)@([\d.]+):(\d+)/", url).groups()
    with psycopg2.connect(host=host, port=port, user=user, password=password,
                          dbname=database) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchall()


def test_the_worker_runs_the_deployment_into_postgres_backed_prefect_and_mlflow(
        stack: Stack, runs: Runs) -> None:
    from mlflow import MlflowClient

    first = stack.flow_run(runs.first)
    assert first["state"]["type"] == "COMPLETED", flow_logs(stack, runs.first)[-3000:]
    assert first["work_pool_name"] == "finegate"
    assert first["deployment_id"] and first["infrastructure_pid"]  # started by the worker
    assert runs.first in (stack.logs / "prefect-worker.log").read_text()
    # Prefect keeps its runs in Postgres.
    stored = {str(row[0]): row[1] for row in sql(stack, "prefect",
                                                 "SELECT id, state_type FROM flow_run")}
    assert stored[runs.first] == "COMPLETED"

    artifacts = httpx.post(f"{stack.prefect_api}/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [runs.first]}}}).json()
    assert {"finegate-nightly", "finegate-scorecard", "finegate-gate", "finegate-evaluation",
            "finegate-training", "finegate-promotion", "finegate-report"} <= \
        {a["key"] for a in artifacts}
    [summary] = [a["data"] for a in artifacts if a["key"] == "finegate-nightly"]
    assert "read 129 = curated 120 + quarantined 7 + duplicates 2" in summary

    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    version = client.get_model_version_by_alias("finegate-classifier", "champion")
    assert version.version == "1" and {"champion", "challenger"} <= set(version.aliases)
    assert {"finegate.snapshot_digest", "finegate.training_digest",
            "finegate.evaluation_report", "finegate.promotion"} <= set(version.tags)
    tags = client.get_run(version.run_id).data.tags
    assert tags["finegate.flow_run_id"] == runs.first
    assert tags["finegate.drops"] == "day1,day2"
    assert tags["finegate.snapshot_digest"] == version.tags["finegate.snapshot_digest"]
    assert tags["finegate.landing"] == str(stack.landing)
    assert client.list_artifacts(version.run_id, "quality")
    # MLflow's registry is in Postgres, its artifacts in the local artifact root.
    assert sql(stack, "mlflow", "SELECT name, version FROM model_versions") == \
        [("finegate-classifier", 1)]
    assert any(Path(stack.localize("/data/mlartifacts")).rglob("model_card.md"))


def test_the_dask_dashboard_link_printed_by_the_run_opens(stack: Stack, runs: Runs) -> None:
    [link] = re.findall(r"Dask cluster: (http\S+)", flow_logs(stack, runs.first))
    assert link == stack.dask_dashboard
    page = httpx.get(link, follow_redirects=True, timeout=30)
    assert page.status_code == 200 and "Dask" in page.text


class Browser:
    """Headless Chromium driven over the DevTools protocol, as a person uses a page: open it,
    wait until its scripts rendered the text, click, read the text, take a screenshot."""

    def __init__(self, profile: Path) -> None:
        self.process = subprocess.Popen(
            [*BROWSER, "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for line in self.process.stderr:
                if match := re.search(r"DevTools listening on (ws://\S+)", line):
                    break
            else:
                raise RuntimeError("chromium did not open its DevTools port")
            port = re.search(r":(\d+)/", match.group(1)).group(1)
            [page] = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                      if t["type"] == "page"]
            from websockets.sync.client import connect

            self.socket = connect(page["webSocketDebuggerUrl"], max_size=None)
        except BaseException:
            self.process.kill()
            self.process.wait(timeout=20)
            raise
        self.ids = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        self.socket.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body.innerText")
        return result["result"].get("value", "")

    def open(self, url: str, *expected: str, timeout: float = 90) -> str:
        self.call("Page.navigate", url=url)
        return self.wait_for(*expected, timeout=timeout)

    def wait_for(self, *expected: str, timeout: float = 90) -> str:
        """The page's visible text once it shows every ``expected`` string."""
        deadline = time.monotonic() + timeout
        while not all(text in (page := self.text()) for text in expected):
            if time.monotonic() > deadline:
                missing = [text for text in expected if text not in page]
                raise AssertionError(f"the page never showed {missing}; it shows:\n{page[:3000]}")
            time.sleep(0.5)
        return page

    def click(self, selector: str, label: str) -> None:
        """Click the ``selector`` element whose text is ``label``."""
        found = self.call("Runtime.evaluate", expression=(
            f"(() => {{ const e = [...document.querySelectorAll({json.dumps(selector)})]"
            f".find(e => e.innerText.trim() === {json.dumps(label)});"
            " if (e) e.click(); return !!e; })()"))
        assert found["result"]["value"], f"no {selector} labelled {label!r} on the page"

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        time.sleep(1)  # let the last render settle
        shot = ARTIFACTS / f"{name}.png"
        shot.write_bytes(base64.b64decode(self.call("Page.captureScreenshot")["data"]))
        (ARTIFACTS / f"{name}.txt").write_text(self.text())
        print(f"screenshot: {shot}")
        return shot

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=20)


needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="needs the Debian chromium package (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    browser = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()


@needs_chromium
def test_prefect_ui_shows_the_run_its_graph_and_artifacts(stack: Stack, runs: Runs,
                                                          browser: Browser) -> None:
    run = stack.flow_run(runs.first)
    text = browser.open(f"{stack.prefect_ui}/runs/flow-run/{runs.first}", run["name"],
                        "Completed", "finegate-nightly", "Artifacts")
    assert "Work Pool" in text and "finegate" in text
    # the graph: a canvas with the task runs as nodes
    assert browser.call("Runtime.evaluate", expression=(
        "document.querySelectorAll('canvas').length"))["result"]["value"] >= 1
    browser.screenshot("prefect-flow-run")
    browser.click("li.p-tab", "Artifacts")
    browser.wait_for("finegate-scorecard", "finegate-gate", "finegate-promotion",
                     "finegate-report")
    browser.screenshot("prefect-flow-run-artifacts")


@needs_chromium
def test_mlflow_ui_shows_the_model_version_card_aliases_and_lineage(stack: Stack, runs: Runs,
                                                                    browser: Browser) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    version = client.get_model_version_by_alias("finegate-classifier", "champion")
    card_title = next(line for line in version.description.splitlines() if line.strip())
    digest = version.tags["finegate.snapshot_digest"]
    browser.open(f"{stack.mlflow_url}/#/models/finegate-classifier/versions/{version.version}",
                 f"Version {version.version}", "champion", "challenger",
                 card_title.lstrip("# ").strip(), "Quality gate", "finegate.snapshot_digest",
                 digest, "finegate.promotion")
    browser.screenshot("mlflow-model-version")
    run = client.get_run(version.run_id)
    browser.open(f"{stack.mlflow_url}/#/experiments/{run.info.experiment_id}/runs/"
                 f"{version.run_id}", "finegate.flow_run_id", runs.first, "finegate.drops")
    browser.screenshot("mlflow-run-lineage")


def test_a_second_trigger_waits_for_the_first_run(stack: Stack, runs: Runs) -> None:
    """Last: the UI tests ran while the second run did."""
    while_first_ran = [(second, name) for first, second, name in runs.seen if first == "RUNNING"]
    assert while_first_ran, runs.seen
    assert ("SCHEDULED", "AwaitingConcurrencySlot") in while_first_ran, runs.seen
    assert all(second in {"SCHEDULED", "PENDING"} for second, _ in while_first_ran), runs.seen
    wait_for(lambda: state(stack, runs.second) in FINAL, "the second run to end", 300)
    first, second = stack.flow_run(runs.first), stack.flow_run(runs.second)
    assert second["state"]["type"] == "COMPLETED", flow_logs(stack, runs.second)[-3000:]
    assert second["start_time"] >= first["end_time"]
    # no new drop, the same snapshot: nothing trained, nothing registered again
    [summary] = [a["data"] for a in httpx.post(f"{stack.prefect_api}/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [runs.second]}}}).json()
        if a["key"] == "finegate-nightly"]
    assert "drops ingested tonight: none" in summary and "training skipped" in summary
    assert sql(stack, "mlflow", "SELECT count(*) FROM model_versions") == [(1,)]
