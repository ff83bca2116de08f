"""Tiny test data every test module builds from: labelled topic rows, a dirty landing zone.

Test modules import builders from here, never from each other.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from finegate.core.config import (
    Config,
    DedupConfig,
    EvaluationConfig,
    FiltersConfig,
    LabelsConfig,
    LabelSet,
    SplitConfig,
    TrainConfig,
)
from finegate.core.lake import Lake, write_json
from finegate.core.results import GateResult
from finegate.tasks.clean import clean_drop
from finegate.tasks.dedup import dedup_drops
from finegate.tasks.ingest import ingest_drop
from finegate.tasks.labels import review_labels
from finegate.tasks.snapshot import build_curated_snapshot
from finegate.tasks.validate import run_gate

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


def noisy_landing(landing: Path, flips: int = 6) -> list[str]:
    """One JSONL drop of 90 topic rows, ``flips`` of them labelled with another topic, and
    six rows with three named annotators who split 2:1; returns the flipped ids."""
    rows = topic_rows(90, seed=5, prefix="r")
    flipped = []
    for row in rows[:flips]:
        row["label"] = LABELS[(LABELS.index(row["label"]) + 1) % 3]
        flipped.append(row["id"])
    for n, row in enumerate(rows[-6:]):
        other = LABELS[(LABELS.index(row["label"]) + 1) % 3]
        row["annotator_labels"] = {"ann": row["label"], "bob": row["label"],
                                   "cy": other if n % 2 else row["label"]}
    (landing / "day1").mkdir(parents=True)
    (landing / "day1" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return flipped


def perturb(text: str, rng: random.Random, share: float = 0.05) -> str:
    """Replace ``share`` of the words by a random word."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(share * len(words)))):
        words[i] = "zzz" + str(rng.randrange(1000))
    return " ".join(words)


LABEL_SET = LabelSet(tuple(LABELS), {})


def curate(landing: Path, lake: Lake, noise: bool = False,
           drops: tuple[str, ...] = ("day1", "day2"), new: tuple[str, ...] | None = None,
           dedup_settings: DedupConfig | None = None):
    """Ingest and clean the ``new`` drops (default: all), then dedup and review the ``drops``
    of the landing zone into a snapshot, as a night of the flow does."""
    drops = list(drops)
    for drop in drops if new is None else new:
        ingest_drop(landing, drop, lake)
        clean_drop(drop, lake, LABEL_SET)
    dedup = dedup_drops(lake, drops, dedup_settings or DedupConfig())
    review = review_labels(lake, drops, dedup, LABELS, LabelsConfig(noise_detection=noise))
    return build_curated_snapshot(lake, drops, dedup, review, SplitConfig()), dedup, review


def gate_on(data_path: str | Path, scorecard: dict, config: Config, out_dir: Path,
            run_name: str = "manual") -> GateResult:
    """Run the quality gate on a snapshot with the given scorecard (written beside ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    card = write_json(out_dir / f"scorecard-{run_name}.json", scorecard)
    return run_gate(str(data_path), str(card), out_dir, expectations_path=config.expectations_path,
                    labels=config.labels, gx_root=Lake.at(config.lake_path).gx,
                    run_name=run_name)


# The synthetic topic texts are English word salad; lingua reads ~15% of them as German. Every
# test config over them (also the YAML ones of the service and stack tests) turns that rule off.
SYNTHETIC_TEXT_FILTERS = {"language": {"enabled": False}}


def make_small_config(root: Path, landing: Path, model_dir: Path) -> Config:
    """A config over ``landing``, a lake in ``root`` and a tiny model on a tiny budget, with a
    30-row golden set."""
    golden = root / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in topic_rows(30, seed=77, prefix="g")))
    return Config(
        landing_path=str(landing), lake_path=str(root / "lake"), labels=LABELS,
        evaluation=EvaluationConfig(golden_path=str(golden)),
        label_quality=LabelsConfig(policy="flag"),  # keeps the row counts of the test exact
        filters=FiltersConfig.model_validate(SYNTHETIC_TEXT_FILTERS),
        train=TrainConfig(model_path=str(model_dir), device="cpu", cpu_max_length=32,
                          cpu_batch_size=8, cpu_max_steps=4, epochs=1),
    )
