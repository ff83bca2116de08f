"""The review queue (tasks/queue.py) and the pull of annotations (tasks/pull.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core import active
from finegate.core.config import QueueConfig, load_config
from finegate.core.lake import Lake
from finegate.tasks.clean import clean_drop
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.pull import pull_annotations
from finegate.tasks.queue import Scorer, allocate, build_queue
from tests.factories import LABEL_SET, LABELS, curate, noisy_landing


@pytest.fixture
def reviewed_lake(tmp_path: Path) -> tuple[Lake, list[str]]:
    """A lake whose label review dropped most planted flips to quarantine."""
    flipped = noisy_landing(tmp_path / "landing")
    lake = Lake.at(tmp_path / "lake")
    curate(tmp_path / "landing", lake, noise=True, drops=("day1",))
    return lake, flipped


def test_queue_ranks_label_issues_first_and_says_why(reviewed_lake):
    lake, flipped = reviewed_lake
    result = build_queue(lake, LABELS, QueueConfig(budget=20), name="q1")
    table = pd.read_json(result.jsonl_path, lines=True)
    assert result.rows == len(table) == 20
    assert "no champion" in result.model and "stand-in" in result.model
    issues = table.loc[table["picked_by"] == "label_issue"]
    assert len(issues) == result.by_source["label_issue"] > 0
    # the planted flips are what cleanlab flags; dropped ones come back from quarantine
    assert set(issues["id"]) <= set(flipped) and len(set(issues["id"])) >= 4
    assert "quarantined by the label policy (drop)" in set(issues["status"])
    assert table["reason"].str.len().min() > 20
    assert issues["reason"].str.contains("label issue \\(cleanlab\\)").all()
    assert table["id"].is_unique
    only_disputes = QueueConfig(budget=5, label_issue_share=0, uncertainty_share=0,
                                density_share=0, disagreement_share=1)
    disputed = pd.read_json(build_queue(lake, LABELS, only_disputes, name="q1b").jsonl_path,
                            lines=True)
    assert sorted(disputed["id"]) == ["r-85", "r-87", "r-89"]  # the 2:1 splits, no more
    assert disputed["reason"].str.contains("annotators disagree: {'ann'").all()


def test_queue_exports_label_studio_tasks_and_config(reviewed_lake):
    lake, _ = reviewed_lake
    result = build_queue(lake, LABELS, QueueConfig(budget=10), name="q2")
    tasks = json.loads(Path(result.tasks_path).read_text())
    assert len(tasks) == 10
    first = tasks[0]
    assert {"text", "label", "row_id", "queue", "reason"} <= set(first["data"])
    prediction = first["predictions"][0]
    assert prediction["model_version"] == "tfidf-stand-in"
    assert 0 < prediction["score"] <= 1
    assert prediction["result"][0]["value"]["choices"][0] in LABELS
    config = ET.fromstring(Path(result.label_config_path).read_text())
    assert [c.get("value") for c in config.iter("Choice")] == LABELS
    assert len(pd.read_csv(result.csv_path)) == 10


def test_allocate_passes_unused_places_on():
    rankings = {"label_issue": (np.array([3]), np.array([0.9])),  # one issue for 4 places
                "uncertainty": (np.array([3, 5, 6, 7, 8, 9]), np.ones(6)),
                "density": (np.array([5, 1, 2]), np.ones(3)),
                "disagreement": (np.array([], dtype=int), np.array([]))}
    picked = allocate(rankings, QueueConfig(budget=10, label_issue_share=0.4,
                                            uncertainty_share=0.2, density_share=0.3,
                                            disagreement_share=0.1), exclude={9})
    rows = [p[0] for p in picked]
    assert rows == [3, 5, 6, 7, 8, 1, 2]  # 3 once; 9 excluded; all there is, in source order
    assert [p[1] for p in picked][:5] == ["label_issue"] + ["uncertainty"] * 4


def test_density_prefers_rows_with_close_neighbours():
    embeddings = np.array([[1, 0], [0.99, 0.14], [0.98, 0.2], [0, 1.0]])
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    density = active.knn_density(embeddings, np.arange(4), k=2)
    assert density[:3].min() > density[3]
    assert active.margin_uncertainty(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == [1.0, 0.0]


def test_queue_scores_with_a_champion_model(reviewed_lake, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from finegate.core.config import demo_model_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        num_labels=3, id2label=dict(enumerate(LABELS)),
                        label2id={label: n for n, label in enumerate(LABELS)})
    model_dir = tmp_path / "champion"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    lake, _ = reviewed_lake
    result = build_queue(lake, LABELS, QueueConfig(budget=8), name="q3", scorer=Scorer(
        model_dir=str(model_dir), version="finegate-classifier/7", max_length=32))
    tasks = json.loads(Path(result.tasks_path).read_text())
    assert result.model == "champion finegate-classifier/7"
    assert {t["predictions"][0]["model_version"] for t in tasks} == {"finegate-classifier/7"}
    picked = pd.read_json(result.jsonl_path, lines=True)
    assert picked["reason"].str.contains("model unsure between").any()


def export_task(row_id: str, text: str, annotations: list[dict]) -> dict:
    return {"id": 1, "data": {"text": text, "row_id": row_id, "queue": "queue-x"},
            "annotations": annotations}


def vote(n: int, who: dict | int, label: str, cancelled: bool = False,
         when: str = "2026-11-29T10:00:00Z") -> dict:
    return {"id": n, "completed_by": who, "was_cancelled": cancelled, "updated_at": when,
            "result": [] if cancelled else [{"type": "choices", "from_name": "label",
                                             "to_name": "text",
                                             "value": {"choices": [label]}}]}


def test_pull_writes_a_review_drop_with_named_votes(tmp_path):
    landing, lake = tmp_path / "landing", Lake.at(tmp_path / "lake")
    landing.mkdir()
    tasks = [
        export_task("r-1", "The striker scored in the cup final.", [
            vote(1, {"id": 1, "email": "ann@x.org"}, "tech", when="2026-11-29T09:00:00Z"),
            vote(2, {"id": 1, "email": "ann@x.org"}, "sports"),  # her later answer wins
            vote(3, {"id": 2, "username": "bob"}, "sports"),
            vote(4, 3, "politics", cancelled=True)]),
        export_task("r-2", "A text nobody answered.", [vote(5, 2, "tech", cancelled=True)]),
    ]
    result = pull_annotations(tasks, landing, lake)
    assert (result.rows, result.votes, result.annotators, result.skipped) == (
        1, 2, ["ann@x.org", "bob"], 1)
    row = json.loads(Path(result.path).read_text())
    assert row == {"text": "The striker scored in the cup final.",
                   "annotator_labels": {"ann@x.org": "sports", "bob": "sports"},
                   "review_of": "r-1", "queue": "queue-x",
                   "annotated_at": "2026-11-29T10:00:00Z"}
    assert result.drop.startswith("review-") and Path(result.path).parent.name == result.drop
    again = pull_annotations(tasks, landing, lake)
    assert again.drop is None and again.rows == 0  # nothing new: no second drop
    ingest_drop(landing, result.drop, lake)
    bronze = pq.read_table(lake.bronze(result.drop)).to_pandas()
    assert bronze["annotator_ids"].map(list).tolist() == [["ann@x.org", "bob"]]
    assert bronze["annotator_labels"].map(list).tolist() == [["sports", "sports"]]
    clean_drop(result.drop, lake, LABEL_SET)  # votes without a label: their consensus
    assert pq.read_table(lake.silver(result.drop)).to_pandas()["label"].tolist() == ["sports"]


def test_label_studio_key_comes_from_the_environment_only(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("label_studio:\n  url: http://localhost:8080\n  api_key: abc\n")
    with pytest.raises(ValueError, match="LABEL_STUDIO_API_KEY"):
        load_config(yaml_file, env={})
    yaml_file.write_text("label_studio:\n  url: http://localhost:8080\n")
    config = load_config(yaml_file, env={"LABEL_STUDIO_API_KEY": "s3cret"})
    assert config.label_studio.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in config.model_dump_json()
    assert "api_key" not in config.model_dump()["label_studio"]  # a dumped config loads again


def test_cli_queue_and_pull_from_an_export_file(reviewed_lake, tmp_path):
    from typer.testing import CliRunner

    from finegate.cli import app

    lake, _ = reviewed_lake
    config = tmp_path / "config.yaml"
    config.write_text(f"landing_path: {tmp_path / 'landing'}\nlake_path: {lake.root}\n"
                      f"labels: {LABELS}\nqueue: {{budget: 5}}\n")
    queued = CliRunner().invoke(app, ["queue", "--config", str(config)])
    assert queued.exit_code == 0, queued.output
    assert "has no champion yet: scoring with the TF-IDF stand-in" in queued.output
    tasks = json.loads(next((lake.root / "review" / "queues").glob("*/tasks.json")).read_text())
    assert len(tasks) == 5
    export = tmp_path / "export.json"  # what Label Studio's JSON export gives back
    export.write_text(json.dumps([{**t, "id": n, "annotations": [vote(n, 7, "tech")]}
                                  for n, t in enumerate(tasks)]))
    pulled = CliRunner().invoke(app, ["pull", "--config", str(config), "--export", str(export)])
    assert pulled.exit_code == 0, pulled.output
    assert "5 rows, 5 votes by user-7" in pulled.output
    empty = tmp_path / "empty-lake.yaml"
    empty.write_text(f"landing_path: {tmp_path / 'landing'}\nlake_path: {tmp_path / 'none'}\n")
    missing = CliRunner().invoke(app, ["queue", "--config", str(empty)])
    assert missing.exit_code == 1 and "no snapshot yet" in missing.output


def test_a_queue_records_what_it_was_built_from(reviewed_lake):
    """The nightly queue is skipped when its inputs did not change (a night with nothing new
    would otherwise re-score the whole snapshot with the champion: minutes on CPU)."""
    from finegate.tasks.queue import latest_queue, queue_key

    lake, _ = reviewed_lake
    settings = QueueConfig(budget=10)
    build_queue(lake, LABELS, settings, name="q-key")
    key = latest_queue(lake)["key"]
    assert key == queue_key(lake, LABELS, settings, "tfidf-stand-in")
    assert key != queue_key(lake, LABELS, settings, "finegate-classifier/2")  # a new champion
    assert key != queue_key(lake, LABELS, QueueConfig(budget=20), "tfidf-stand-in")
    assert latest_queue(lake)["queue"] == "q-key"
