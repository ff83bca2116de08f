"""Shared test data: a tiny dirty landing zone, a tiny random BERT, and a config using both."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pandas as pd
import pytest

# No hub access and no telemetry in tests (the Makefile sets the same for `make test`).
for name, value in {"HF_HUB_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false",
                    "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(name, value)

from finegate.config import (  # noqa: E402
    Config,
    EvaluationConfig,
    LabelsConfig,
    TrainConfig,
    demo_model_path,
)

LABELS = ["sports", "tech", "politics"]
TOPIC_WORDS = {
    "sports": ["match", "goal", "team", "coach", "league", "striker", "season", "trophy",
               "cup", "referee"],
    "tech": ["software", "chip", "phone", "network", "computer", "internet", "data", "robot",
             "cloud", "app"],
    "politics": ["minister", "election", "vote", "party", "parliament", "policy", "campaign",
                 "law", "tax", "mp"],
}
# Rows planted in `dirty_landing` that must end up in quarantine, by reason.
PLANTED_QUARANTINE = {
    "invalid JSON": 1, "missing text": 2, "missing label": 1, "CSV row has": 1,
    "unknown label": 1, "unsupported file type": 1,
}


def topic_text(label: str, rng: random.Random, words: int = 30) -> str:
    """A synthetic article of ``words`` words drawn mostly from the label's topic."""
    common = ["the", "a", "of", "and", "to", "in", "said", "on", "for", "with"]
    return " ".join(rng.choice(TOPIC_WORDS[label] if rng.random() < 0.6 else common)
                    for _ in range(words)).capitalize() + "."


def topic_rows(n: int, seed: int, prefix: str) -> list[dict[str, str]]:
    """``n`` labelled synthetic rows, balanced over ``LABELS``."""
    rng = random.Random(seed)
    return [{"id": f"{prefix}-{i}", "text": topic_text(LABELS[i % 3], rng),
             "label": LABELS[i % 3]} for i in range(n)]


def write_dirty_landing(landing: Path, rows_per_format: int = 30) -> dict[str, int]:
    """A landing zone with two drops in all four formats and planted bad rows; rows per drop."""
    day1, day2 = landing / "day1", landing / "day2"
    rng = random.Random(7)
    for i in range(rows_per_format):
        label = LABELS[i % 3]
        folder = day1 / ("Tech" if label == "tech" else label)  # folder names vary in case
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.txt").write_text(topic_text(label, rng))
    (day1 / "sports" / "cp1252.txt").write_bytes(
        "The striker\x92s goal won the cup for the team, \xa3 5 million".encode("latin-1"))
    (day1 / "notes.xml").write_text("<notes>not a supported format</notes>")

    jsonl = topic_rows(rows_per_format, seed=1, prefix="j")
    jsonl[0]["label"] = " SPORTS "  # case/space variant: cleaned, not quarantined
    jsonl[1]["text"] = "<p>" + jsonl[1]["text"] + " &amp; more</p>"
    lines = [json.dumps(r) for r in jsonl]
    lines += ['{"id": "bad-json", "text": "cut off',
              json.dumps({"id": "no-text", "label": "tech"}),
              json.dumps({"id": "no-label", "text": "A text that nobody labelled."}),
              json.dumps({"id": "weather", "text": "Rain is expected tomorrow.", "label": "x"}),
              json.dumps(jsonl[2])]  # an exact duplicate row (same id, same text)
    day2.mkdir(parents=True)
    (day2 / "rows.jsonl").write_text("\n".join(lines) + "\n")

    csv_rows = topic_rows(rows_per_format, seed=2, prefix="c")
    csv_rows[3]["text"] = jsonl[4]["text"].upper()  # same content as a JSONL row, other case
    frame = pd.DataFrame(csv_rows)
    text = frame.to_csv(index=False) + 'c-bad,"one field too many",tech,extra\n'
    (day2 / "rows.csv").write_text(text)

    parquet_rows = topic_rows(rows_per_format, seed=3, prefix="p")
    parquet_rows.append({"id": "p-null", "text": None, "label": "tech"})
    pd.DataFrame(parquet_rows).to_parquet(day2 / "rows.parquet", index=False)
    return {"day1": rows_per_format + 2, "day2": 3 * rows_per_format + 7}


@pytest.fixture
def dirty_landing(tmp_path: Path) -> Path:
    """A fresh dirty landing zone in a temp folder."""
    landing = tmp_path / "landing"
    write_dirty_landing(landing)
    return landing


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BERT with the demo model's tokenizer (no download)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def small_config(tmp_path: Path, dirty_landing: Path, tiny_model_dir: Path) -> Config:
    """A config over the dirty landing zone, a temp lake and the tiny model on a tiny budget."""
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in topic_rows(30, seed=77, prefix="g")))
    return Config(
        landing_path=str(dirty_landing), lake_path=str(tmp_path / "lake"), labels=LABELS,
        evaluation=EvaluationConfig(golden_path=str(golden)),
        label_quality=LabelsConfig(policy="flag"),  # keeps the row counts of the test exact
        train=TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=32,
                          cpu_batch_size=8, cpu_max_steps=4, epochs=1),
    )
