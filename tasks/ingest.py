"""Ingest: read every supported file of one landing drop into typed bronze rows.

Reads JSONL, CSV, Parquet and folders of ``.txt`` files (the folder name is the label) with Dask,
one partition per file (``.txt`` files are grouped). A row that cannot be parsed, or lacks text or
label, goes to quarantine with its raw content and a reason; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from finegate.core.lake import Lake
from finegate.core.landing import inside
from finegate.core.quarantine import reject, write_quarantine
from finegate.core.results import IngestResult
from finegate.core.schemas import BRONZE_COLUMNS, BRONZE_SCHEMA, write_parquet

SUPPORTED_SUFFIXES = {".jsonl", ".csv", ".parquet", ".txt"}
# Columns of a parsed partition: bronze rows and quarantined rows share one frame until written.
PARSED_COLUMNS = [*BRONZE_COLUMNS, "reason", "raw"]


def decode_bytes(data: bytes) -> tuple[str, list[str]]:
    """Decode UTF-8 (with or without BOM); fall back to cp1252 and flag the row."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), ["decoded_cp1252"]


def stable_id(given: Any, source_key: str, position: int, text: str) -> str:
    """The row's given id, or a hash of where it came from and what it says."""
    if given is not None and str(given).strip():
        return str(given).strip()
    digest = hashlib.sha1(f"{source_key}\x00{position}\x00{text}".encode()).hexdigest()
    return digest[:16]


def annotator_votes(value: Any) -> tuple[list[str] | None, list[str] | None]:
    """Annotator labels and ids from ``{annotator: label}``, ``[label, ...]`` or ``a|b|c``.

    JSON text (as in CSV cells) is parsed first. Ids are None when annotators are anonymous.
    """
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None, None
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip()[:1] in "[{" else value.split("|")
    if isinstance(value, dict):
        return [str(v).strip() for v in value.values()], [str(k) for k in value]
    return [str(v).strip() for v in value], None


def _row(record: Any, *, drop: str, source: str, source_key: str, position: int,
         raw: str, flags: list[str]) -> dict[str, Any]:
    """Turn one parsed record into a bronze row, or a quarantine row with its reason."""
    row = {"drop": drop, "source": source, "position": position, "raw": raw,
           "flags": list(flags), "annotator_labels": None, "annotator_ids": None, "reason": None}
    if not isinstance(record, dict):
        return {**row, "id": None, "text": None, "label": None,
                "reason": f"record is a {type(record).__name__}, expected an object"}
    text, label = record.get("text"), record.get("label")
    row["id"] = stable_id(record.get("id"), source_key, position, str(text))
    row["text"] = text if isinstance(text, str) else None
    row["label"] = None if label is None else str(label)
    try:
        row["annotator_labels"], row["annotator_ids"] = annotator_votes(
            record.get("annotator_labels"))
    except (ValueError, TypeError, AttributeError) as err:
        row["reason"] = f"annotator_labels unreadable: {err}"
    if text is None or (isinstance(text, str) and not text.strip()):
        row["reason"] = "missing text"
    elif not isinstance(text, str):
        row["reason"] = f"text is a {type(text).__name__}, expected a string"
    elif (label is None or not str(label).strip()) and not row["annotator_labels"]:
        row["reason"] = "missing label"
    if row["label"] is not None and not row["label"].strip():
        row["label"] = None
    return row


def _file_problem(reason: str, *, drop: str, source: str, raw: str) -> dict[str, Any]:
    return {"id": None, "text": None, "label": None, "annotator_labels": None,
            "annotator_ids": None, "flags": [],
            "drop": drop, "source": source, "position": 0, "raw": raw, "reason": reason}


def parse_file(path: Path, landing: Path, drop: str) -> list[dict[str, Any]]:
    """Parse one landing file into rows (good and quarantined)."""
    source_key = path.relative_to(landing).as_posix()
    source = (landing.resolve() / source_key).as_uri()
    common = {"drop": drop, "source": source, "source_key": source_key}
    suffix = path.suffix.lower()
    if not inside(path, landing):
        return [_file_problem(f"file resolves outside the landing zone ({path.resolve()}); "
                              "symlinks out of the landing zone are not read", drop=drop,
                              source=source, raw="")]
    try:
        if suffix == ".parquet":
            records = pq.read_table(path).to_pylist()
            return [_row(rec, position=i, raw=json.dumps(rec, default=str), flags=[], **common)
                    for i, rec in enumerate(records)]
        text, flags = decode_bytes(path.read_bytes())
    except (OSError, pa.ArrowException) as err:
        return [_file_problem(f"unreadable {suffix or 'file'}: {err}", drop=drop, source=source,
                              raw="")]
    if suffix == ".txt":
        record = {"text": text, "label": path.parent.name}
        return [_row(record, position=0, raw=text, flags=flags, **common)]
    if suffix == ".jsonl":
        return _parse_jsonl(text, flags, common)
    if suffix == ".csv":
        return _parse_csv(text, flags, common)
    return [_file_problem(f"unsupported file type {suffix or '(none)'}; supported: "
                          f"{', '.join(sorted(SUPPORTED_SUFFIXES))}", drop=drop, source=source,
                          raw=text[:10_000])]


def _parse_jsonl(text: str, flags: list[str], common: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    # Only "\n" ends a JSON line: str.splitlines() would also split on U+2028, U+0085, ...,
    # which JSON allows unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            rows.append({**_file_problem(f"invalid JSON: {err.msg} at column {err.colno}",
                                         drop=common["drop"], source=common["source"], raw=line),
                         "position": number})
            continue
        rows.append(_row(record, position=number, raw=line, flags=flags, **common))
    return rows


def _parse_csv(text: str, flags: list[str], common: dict[str, str]) -> list[dict[str, Any]]:
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[dict[str, Any]] = []
    try:
        header = next(reader, None)
        if header is None:
            return []
        for fields in reader:
            if not fields:
                continue
            raw = _csv_line(fields)
            if len(fields) != len(header):
                rows.append({**_file_problem(
                    f"CSV row has {len(fields)} fields, header has {len(header)}",
                    drop=common["drop"], source=common["source"], raw=raw),
                    "position": reader.line_num})
                continue
            record = dict(zip(header, fields, strict=True))
            rows.append(_row(record, position=reader.line_num, raw=raw, flags=flags, **common))
    except csv.Error as err:
        rows.append({**_file_problem(f"unparseable CSV from line {reader.line_num}: {err}",
                                     drop=common["drop"], source=common["source"], raw=text),
                     "position": reader.line_num})
    return rows


def _csv_line(fields: list[str]) -> str:
    """A CSV row as it reads in a file, quoting kept (the raw content kept in quarantine)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def parse_files(paths: list[str], landing: str, drop: str) -> pd.DataFrame:
    """Parse a group of files into one partition frame with ``PARSED_COLUMNS``."""
    rows = [row for p in paths for row in parse_file(Path(p), Path(landing), drop)]
    frame = pd.DataFrame(rows, columns=PARSED_COLUMNS)
    return frame.astype({"position": "int64"}).astype(
        {c: object for c in PARSED_COLUMNS if c != "position"}
    )


def plan_partitions(files: list[Path], txt_files_per_partition: int) -> list[list[str]]:
    """One partition per structured file; ``.txt`` files grouped, since each is one row."""
    txt = [str(f) for f in files if f.suffix.lower() == ".txt"]
    groups = [txt[i:i + txt_files_per_partition]
              for i in range(0, len(txt), txt_files_per_partition)]
    return groups + [[str(f)] for f in files if f.suffix.lower() != ".txt"]


def _ingest_partition(paths: list[str], landing: str, drop: str, bronze: str, quarantine: str,
                      name: str) -> tuple[int, int]:
    frame = parse_files(paths, landing, drop)
    bad = frame["reason"].notna()
    good = write_parquet(frame.loc[~bad], Path(bronze), BRONZE_SCHEMA, name)
    rejected = reject(frame.loc[bad], "ingest", frame.loc[bad, "reason"])
    return good, write_quarantine(rejected, Path(quarantine), name)


def ingest_drop(landing: Path, drop: str, lake: Lake, *, txt_files_per_partition: int = 128,
                ) -> IngestResult:
    """Parse one drop in parallel partitions (on the current Dask client); write bronze and
    ingest quarantine Parquet."""
    import dask

    files = sorted(p for p in (landing / drop).rglob("*") if p.is_file())
    partitions = plan_partitions(files, txt_files_per_partition) or [[]]
    with lake.staged(lake.bronze(drop), lake.quarantine(drop, "ingest")) as (bronze, quarantine):
        counts = dask.compute(*[
            dask.delayed(_ingest_partition)(paths, str(landing), drop, str(bronze),
                                            str(quarantine), f"part-{i:05d}")
            for i, paths in enumerate(partitions)])
    rows_bronze = sum(good for good, _ in counts)
    rows_quarantined = sum(bad for _, bad in counts)
    return IngestResult(drop=drop, bronze_path=str(lake.bronze(drop)),
                        quarantine_path=str(lake.quarantine(drop, "ingest")),
                        rows_read=rows_bronze + rows_quarantined, rows_bronze=rows_bronze,
                        rows_quarantined=rows_quarantined)
