"""Clean: normalise text and labels of one drop; reject what cannot be trained on.

Text: HTML tags and entities removed, Unicode NFKC, whitespace collapsed. Labels: matched to the
configured label set ignoring case, spaces, ``-``/``_``, and through ``label_aliases``; rows with
annotator votes take the votes' consensus as their label. Rows with
an unknown label, a vote outside the label set, or no text left after cleaning go to quarantine
with the reason. The other rows then meet the heuristic filters (``finegate.core.filters``,
``filters`` config section): a rule set to ``drop`` quarantines the row as
``filter:<name>: <measured value>``, one set to ``flag`` keeps it with the flag ``filter:<name>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from finegate.core.config import FiltersConfig, LabelSet
from finegate.core.filters import document, judge
from finegate.core.lake import Lake
from finegate.core.quarantine import reject, write_quarantine
from finegate.core.results import CleanResult
from finegate.core.schemas import SILVER_SCHEMA, write_parquet
from finegate.core.text import consensus, label_key, label_lookup, normalise_text, text_hash


def resolve_label(given: str | None, votes: list[str] | None, lookup: dict[str, str],
                  voters: list[str] | None = None,
                  ) -> tuple[str | None, list[str] | None, list[str], str | None]:
    """Canonical label, canonical votes, flags and rejection reason (None) of one row.

    With annotator votes, the label is their consensus, flagged ``label_from_consensus`` when
    it overrides a different given label. A vote outside the label set (after aliases) is an
    error: the row is rejected with a reason naming the vote (and its annotator).
    """
    # a missing label reads back as None or, in a pandas string column, as NaN (or NA)
    label = lookup.get(label_key(given)) if isinstance(given, str) else None
    if votes is None or not len(votes):
        return label, None, [], None
    canonical = [lookup.get(label_key(v)) for v in votes]
    unknown = [(n, v) for n, (v, c) in enumerate(zip(votes, canonical, strict=True)) if c is None]
    if unknown:
        named = voters is not None and len(voters) == len(votes)
        listed = ", ".join(f"{v!r} (by {voters[n] if named else f'annotator #{n + 1}'})"
                           for n, v in unknown)
        return label, list(votes), [], (
            f"annotator vote{'s' if len(unknown) > 1 else ''} {listed} not in the label set or "
            "label_aliases; fix the vote, add an alias, or set annotators.vote_delimiter if "
            "votes were split wrongly")
    agreed = consensus(canonical)
    overridden = label is not None and agreed != label
    return agreed, canonical, (["label_from_consensus"] if overridden else []), None


def clean_frame(frame: pd.DataFrame, lookup: dict[str, str]) -> pd.DataFrame:
    """Clean bronze rows; returns silver columns plus ``reason`` (set on rejected rows)."""
    out = frame.copy()
    out["text"] = [normalise_text(t) for t in out["text"]]
    resolved = [resolve_label(label, None if votes is None else list(votes), lookup,
                              None if ids is None else list(ids))
                for label, votes, ids in zip(frame["label"], frame["annotator_labels"],
                                             frame["annotator_ids"], strict=True)]
    out["label"] = [label for label, _, _, _ in resolved]
    out["annotator_labels"] = [votes for _, votes, _, _ in resolved]
    out["flags"] = [[*(f if f is not None else []), *extra]
                    for f, (_, _, extra, _) in zip(frame["flags"], resolved, strict=True)]
    out["text_hash"] = [text_hash(t) for t in out["text"]]
    out["reason"] = None
    out.loc[out["label"].isna(), "reason"] = [
        f"unknown label {label!r}; not in the label set or label_aliases"
        for label in frame.loc[out["label"].isna(), "label"]
    ]
    vote_reasons = pd.Series([reason for *_, reason in resolved], index=out.index)
    out.loc[vote_reasons.notna(), "reason"] = vote_reasons[vote_reasons.notna()]
    out.loc[out["text"] == "", "reason"] = "empty text after cleaning"
    return out


def apply_filters(cleaned: pd.DataFrame, raw_texts: pd.Series,
                  settings: FiltersConfig) -> pd.DataFrame:
    """Run the heuristic filters on the rows not yet rejected: set ``reason`` on the dropped,
    add ``filter:<name>`` flags on the flagged. Lines come from the raw text (cleaning joins
    them), each line cleaned."""
    if not settings.enabled:
        return cleaned
    out = cleaned.copy()
    for i in out.index[out["reason"].isna()]:
        raw = raw_texts[i]
        lines = [normalise_text(line) for line in raw.splitlines()] if raw else None
        verdict = judge(document(out.at[i, "text"], lines), settings)
        out.at[i, "reason"] = verdict.reason
        if verdict.flags:
            out.at[i, "flags"] = [*out.at[i, "flags"], *verdict.flags]
    return out


def _clean_partition(bronze_file: str, silver: str, quarantine: str, lookup: dict[str, str],
                     filters: FiltersConfig) -> tuple[int, int]:
    bronze = pq.read_table(bronze_file).to_pandas()
    cleaned = apply_filters(clean_frame(bronze, lookup), bronze["text"], filters)
    bad = cleaned["reason"].notna()
    raw = [json.dumps({"text": t, "label": lab}) for t, lab in
           zip(bronze.loc[bad, "text"], bronze.loc[bad, "label"], strict=True)]
    name = Path(bronze_file).stem
    good = write_parquet(cleaned.loc[~bad], Path(silver), SILVER_SCHEMA, name)
    rejected = reject(cleaned.loc[bad], "clean", cleaned.loc[bad, "reason"], raw=raw)
    return good, write_quarantine(rejected, Path(quarantine), name)


def clean_drop(drop: str, lake: Lake, label_set: LabelSet,
               filters: FiltersConfig | None = None) -> CleanResult:
    """Clean and filter every bronze partition of a drop in parallel (on the current Dask
    client); write silver and clean quarantine. ``filters``: None = no heuristic filters (the
    flow passes ``config.filters``)."""
    import dask

    lookup = label_lookup(label_set)
    filters = FiltersConfig(enabled=False) if filters is None else filters
    with lake.staged(lake.silver(drop), lake.quarantine(drop, "clean")) as (silver, quarantine):
        counts = dask.compute(*[
            dask.delayed(_clean_partition)(str(f), str(silver), str(quarantine), lookup,
                                           filters)
            for f in sorted(lake.bronze(drop).glob("*.parquet"))])
    good, bad = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return CleanResult(drop=drop, silver_path=str(lake.silver(drop)),
                       quarantine_path=str(lake.quarantine(drop, "clean")),
                       rows_in=good + bad, rows_silver=good, rows_quarantined=bad)
