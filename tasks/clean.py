"""Clean: normalise text and labels of one drop; reject what cannot be trained on.

Text: HTML tags and entities removed, Unicode NFKC, whitespace collapsed. Labels: matched to the
configured label set ignoring case, spaces, ``-``/``_``, and through ``label_aliases``; rows with
annotator votes take the votes' consensus as their label. Rows with
an unknown label or no text left after cleaning go to quarantine with the reason.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from finegate.config import Config
from finegate.lake import BRONZE_COLUMNS, QUARANTINE_COLUMNS, Lake, replace_dir
from tasks.ingest import BRONZE_SCHEMA, QUARANTINE_SCHEMA, write_partition

SILVER_COLUMNS = [*BRONZE_COLUMNS, "text_hash"]
SILVER_SCHEMA = BRONZE_SCHEMA.append(pa.field("text_hash", pa.string()))

_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class CleanResult:
    """What cleaning one drop produced."""

    drop: str
    silver_path: str
    quarantine_path: str
    rows_in: int
    rows_silver: int
    rows_quarantined: int


def normalise_text(text: str) -> str:
    """Strip HTML (tags, scripts, entities) and control characters (NUL...), apply Unicode
    NFKC and collapse whitespace."""
    if "<" in text:
        text = _TAG.sub(" ", _SCRIPT_OR_STYLE.sub(" ", text))
    text = unicodedata.normalize("NFKC", html.unescape(text))
    return _WHITESPACE.sub(" ", _CONTROL.sub(" ", text)).strip()


def label_key(label: str) -> str:
    """The form labels are compared in: case-folded, without spaces, dashes or underscores."""
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", label)).casefold()


def label_lookup(labels: list[str], aliases: dict[str, str]) -> dict[str, str]:
    """Map every accepted label variant (by :func:`label_key`) to its canonical label."""
    lookup = {label_key(label): label for label in labels}
    for variant, canonical in aliases.items():
        if canonical not in labels:
            raise ValueError(f"label alias {variant!r} points to {canonical!r}, "
                             f"which is not in the label set {labels}")
        lookup[label_key(variant)] = canonical
    return lookup


def text_hash(text: str) -> str:
    """Hash of the content ignoring case and whitespace: equal hashes are exact duplicates."""
    return hashlib.sha1(_WHITESPACE.sub(" ", text).strip().casefold().encode()).hexdigest()


def consensus(votes: list[str]) -> str:
    """The majority label of the votes; ties go to the alphabetically first label."""
    counts = Counter(votes)
    best = max(counts.values())
    return min(label for label, n in counts.items() if n == best)


def resolve_label(given: str | None, votes: list[str] | None,
                  lookup: dict[str, str]) -> tuple[str | None, list[str] | None, list[str]]:
    """Canonical label, canonical votes and flags of one row.

    With annotator votes, the label is their consensus (over votes in the label set), flagged
    ``label_from_consensus`` when it overrides a different given label.
    """
    label = None if given is None else lookup.get(label_key(given))
    if votes is None:
        return label, None, []
    canonical = [lookup.get(label_key(v), v) for v in votes]
    known = [v for v in canonical if v in lookup.values()]
    if not known:
        return label, canonical, []
    agreed = consensus(known)
    overridden = label is not None and agreed != label
    return agreed, canonical, (["label_from_consensus"] if overridden else [])


def clean_frame(frame: pd.DataFrame, lookup: dict[str, str]) -> pd.DataFrame:
    """Clean bronze rows; returns silver columns plus ``reason`` (set on rejected rows)."""
    out = frame.copy()
    out["text"] = [normalise_text(t) for t in out["text"]]
    resolved = [resolve_label(label, None if votes is None else list(votes), lookup)
                for label, votes in zip(frame["label"], frame["annotator_labels"], strict=True)]
    out["label"] = [label for label, _, _ in resolved]
    out["annotator_labels"] = [votes for _, votes, _ in resolved]
    out["flags"] = [[*(f if f is not None else []), *extra]
                    for f, (_, _, extra) in zip(frame["flags"], resolved, strict=True)]
    out["text_hash"] = [text_hash(t) for t in out["text"]]
    out["reason"] = None
    out.loc[out["label"].isna(), "reason"] = [
        f"unknown label {label!r}; not in the label set or label_aliases"
        for label in frame.loc[out["label"].isna(), "label"]
    ]
    out.loc[out["text"] == "", "reason"] = "empty text after cleaning"
    return out


def _quarantine_rows(bronze: pd.DataFrame, cleaned: pd.DataFrame) -> pd.DataFrame:
    rejected = cleaned["reason"].notna()
    raw = [json.dumps({"text": t, "label": lab}) for t, lab in
           zip(bronze.loc[rejected, "text"], bronze.loc[rejected, "label"], strict=True)]
    return cleaned.loc[rejected].assign(stage="clean", raw=raw)[QUARANTINE_COLUMNS]


def _clean_partition(bronze_file: str, silver: str, quarantine: str,
                     lookup: dict[str, str]) -> tuple[int, int]:
    bronze = pq.read_table(bronze_file).to_pandas()
    cleaned = clean_frame(bronze, lookup)
    name = Path(bronze_file).stem
    kept = cleaned.loc[cleaned["reason"].isna(), SILVER_COLUMNS]
    good = write_partition(kept, Path(silver), SILVER_SCHEMA, name)
    bad = write_partition(_quarantine_rows(bronze, cleaned), Path(quarantine), QUARANTINE_SCHEMA,
                          name)
    return good, bad


def clean_drop(drop: str, lake: Lake, labels: list[str], aliases: dict[str, str]) -> CleanResult:
    """Clean every bronze partition of a drop in parallel; write silver and clean quarantine."""
    import dask

    lookup = label_lookup(labels, aliases)
    staged = lake.staging()
    silver, quarantine = staged / "silver", staged / "quarantine"
    silver.mkdir()
    quarantine.mkdir()
    jobs = [dask.delayed(_clean_partition)(str(f), str(silver), str(quarantine), lookup)
            for f in sorted(lake.bronze(drop).glob("*.parquet"))]
    counts = dask.compute(*jobs)
    replace_dir(silver, lake.silver(drop))
    replace_dir(quarantine, lake.quarantine(drop, "clean"))
    staged.rmdir()
    good, bad = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return CleanResult(drop=drop, silver_path=str(lake.silver(drop)),
                       quarantine_path=str(lake.quarantine(drop, "clean")),
                       rows_in=good + bad, rows_silver=good, rows_quarantined=bad)


@task(name="clean", task_run_name="clean-{drop}", retries=1)
def clean(config: Config, drop: str) -> CleanResult:
    """Prefect task: clean one ingested drop on the flow's Dask cluster."""
    from prefect_dask import get_dask_client

    with get_dask_client():
        return clean_drop(drop, Lake.at(config.lake_path), config.labels, config.label_aliases)
