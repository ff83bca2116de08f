"""Ingest: read every supported file of one landing drop into typed bronze rows.

Reads JSONL, CSV, Parquet and folders of ``.txt`` files (the folder name is the label) with Dask,
one partition per file (``.txt`` files are grouped). A ``.json`` file must be a Label Studio JSON
export: each task becomes a review row with its people's named votes, as ``finegate pull``
writes it. A row that cannot be parsed, or lacks text or
label, goes to quarantine with its raw content and a reason; nothing is dropped silently. A file
that cannot be read as rows at all (outside the landing zone, unsupported, corrupt, UTF-16
without a byte-order mark, a CSV header without the required columns, a ``.json`` file that is
not a Label Studio export) is one quarantine row.
Files are UTF-8, UTF-16/32 with a BOM, or else cp1252 (flagged); a CSV delimited by ``;``, tab
or ``|`` is recognised from its header. Rows read are counted from each file independently of
its parser (:func:`count_rows`), so a reader that loses a row cannot hide it.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from finegate.core.label_studio import export_tasks, review_row
from finegate.core.lake import Lake
from finegate.core.landing import inside
from finegate.core.quarantine import reject, write_quarantine
from finegate.core.results import IngestResult
from finegate.core.schemas import BRONZE_COLUMNS, BRONZE_SCHEMA, write_parquet

SUPPORTED_SUFFIXES = {".jsonl", ".csv", ".parquet", ".txt", ".json"}  # .json: Label Studio
# Columns of a parsed partition: bronze rows and quarantined rows share one frame until written.
PARSED_COLUMNS = [*BRONZE_COLUMNS, "reason", "raw"]
# A CSV header needs a text column and a label (or annotator votes) column.
CSV_DELIMITERS = ",;\t|"
DELIMITER_NAMES = {"\t": "tab"}
SNIFF_CHARS = 8192
# Checked in this order: a UTF-32-LE BOM starts with the UTF-16-LE one.
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
RAW_CHARS = 10_000  # raw content kept with a file quarantined whole


class FileProblem(Exception):
    """A landing file quarantined whole, as one row with this reason (and its raw start)."""

    def __init__(self, reason: str, raw: str = "") -> None:
        super().__init__(reason)
        self.reason, self.raw = reason, raw


def decode_bytes(data: bytes) -> tuple[str, list[str]]:
    """Decode UTF-8 (with or without BOM), or UTF-16/32 with a BOM (rows flagged
    ``decoded_utf-16``/``decoded_utf-32``); fall back to cp1252 and flag the rows.

    Raises :class:`FileProblem` for bytes that look like UTF-16/32 without a BOM (many NUL
    bytes in a regular pattern): guessed as cp1252 they would become one bad row per line.
    """
    # FF FE 00 00 is the UTF-32-LE mark, or the UTF-16-LE one before a NUL: both are tried
    marked = [codec for mark, codec in BOMS if data.startswith(mark)]
    for codec in marked:
        try:
            return data.decode(codec), [f"decoded_{codec}"]
        except UnicodeDecodeError as err:
            problem = (f"file starts with a {marked[0].upper()} byte-order mark but is not valid "
                       f"{codec.upper()} ({err.reason} at byte {err.start}); re-save it as UTF-8 "
                       "and deliver it again")
    if marked:
        raise FileProblem(problem)
    suspected = wide_encoding(data)
    if suspected:
        raise FileProblem(f"file looks like {suspected} without a byte-order mark "
                          f"({data[:4096].count(0) / len(data[:4096]):.0%} NUL bytes); re-save "
                          f"it as UTF-8, or as {suspected} with a BOM, and deliver it again")
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), ["decoded_cp1252"]


def wide_encoding(data: bytes) -> str | None:
    """``UTF-16-LE``/``-BE`` or ``UTF-32-LE``/``-BE`` when the first 4 KB have NUL bytes in
    the pattern of mostly-ASCII text in that encoding, else None (UTF-8 text has no NULs)."""
    sample = data[:4096]
    if len(sample) < 16 or sample.count(0) < len(sample) // 3:
        return None

    def nul_share(offset: int, step: int) -> float:
        lane = sample[offset::step]
        return lane.count(0) / len(lane)

    for step, name in ((4, "UTF-32"), (2, "UTF-16")):
        shares = [nul_share(lane, step) for lane in range(step)]
        text_lanes = [lane for lane, share in enumerate(shares) if share <= 0.1]
        if (text_lanes in ([0], [step - 1])
                and all(s >= 0.7 for lane, s in enumerate(shares) if lane != text_lanes[0])):
            return f"{name}-{'LE' if text_lanes == [0] else 'BE'}"
    return None


def stable_id(given: Any, source_key: str, position: int, text: str) -> str:
    """The row's given id, or a hash of where it came from and what it says."""
    if given is not None and str(given).strip():
        return str(given).strip()
    digest = hashlib.sha1(f"{source_key}\x00{position}\x00{text}".encode()).hexdigest()
    return digest[:16]


VOTE_DELIMITERS = "|;,/"  # recognised in a votes string when it uses exactly one of them
# Keys that mark a row as a person's review (a review drop; see README "Human review drops").
REVIEW_KEYS = ("review_of", "queue", "annotated_at")


class VoteProblem(ValueError):
    """Annotator votes that cannot be read unambiguously (the row is quarantined)."""


def split_votes(value: str, delimiter: str = "auto") -> list[str]:
    """Votes from a string: split on ``delimiter``, or with ``auto`` on the one of ``| ; , /``
    it contains (none: one vote); a string mixing several is ambiguous (:class:`VoteProblem`)."""
    if delimiter != "auto":
        return value.split(delimiter)
    found = [d for d in VOTE_DELIMITERS if d in value]
    if len(found) > 1:
        raise VoteProblem(f"votes {value!r} mix the delimiters {' '.join(found)}; set "
                          "annotators.vote_delimiter to the one that separates votes")
    return value.split(found[0]) if found else [value]


def annotator_votes(value: Any, delimiter: str = "auto",
                    ) -> tuple[list[str] | None, list[str] | None]:
    """Annotator labels and ids from ``{annotator: label}``, ``[label, ...]`` or a delimited
    string (``a|b|c``; see :func:`split_votes`).

    JSON text (as in CSV cells) is parsed first. Ids are None when annotators are anonymous.
    """
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None, None
    if isinstance(value, str):
        value = (json.loads(value) if value.lstrip()[:1] in "[{"
                 else split_votes(value, delimiter))
    if isinstance(value, dict):
        return [str(v).strip() for v in value.values()], [str(k).strip() for k in value]
    if not isinstance(value, list | tuple):
        raise VoteProblem(f"expected an object, a list or a delimited string, got "
                          f"{type(value).__name__} {value!r}")
    return [str(v).strip() for v in value], None


def review_flags(record: dict[str, Any]) -> list[str]:
    """Flags that mark a person's review and keep its lineage (``human_review``,
    ``review_of:<id>``, ``queue:<name>``, ``annotated_at:<time>``): for a row with votes that
    carries a review key, even an empty one (a review drop row). Voted rows without one are
    ordinary annotated data: their votes' majority is the label, and the label policy applies."""
    if not any(key in record for key in REVIEW_KEYS):
        return []
    flags = ["human_review"]
    for key in REVIEW_KEYS:
        value = record.get(key)
        if value is not None and str(value).strip():
            flags.append(f"{key}:{str(value).strip()}")
    return flags


def _row(record: Any, *, drop: str, source: str, source_key: str, position: int,
         raw: str, flags: list[str], vote_delimiter: str = "auto") -> dict[str, Any]:
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
            record.get("annotator_labels"), vote_delimiter)
    except (ValueError, TypeError, AttributeError) as err:
        row["reason"] = f"annotator_labels unreadable: {err}"
    if row["annotator_labels"]:
        row["flags"] += review_flags(record)
    if text is None or (isinstance(text, str) and not text.strip()):
        row["reason"] = "missing text"
    elif not isinstance(text, str):
        row["reason"] = f"text is a {type(text).__name__}, expected a string"
    elif (row["reason"] is None and (label is None or not str(label).strip())
          and not row["annotator_labels"]):
        row["reason"] = "missing label"
    if row["label"] is not None and not row["label"].strip():
        row["label"] = None
    return row


def _file_problem(reason: str, *, drop: str, source: str, raw: str) -> dict[str, Any]:
    return {"id": None, "text": None, "label": None, "annotator_labels": None,
            "annotator_ids": None, "flags": [],
            "drop": drop, "source": source, "position": 0, "raw": raw, "reason": reason}


@dataclass(frozen=True)
class LandingFile:
    """One landing file, opened: its decoded text (or Parquet records) and what decoding found."""

    suffix: str
    text: str = ""
    flags: tuple[str, ...] = ()
    delimiter: str = ","  # CSV only
    records: list[Any] | None = None  # Parquet records, or a Label Studio export's tasks
    footer_rows: int = 0  # Parquet only: the row count in the file's metadata


def open_landing_file(path: Path, landing: Path) -> LandingFile:
    """Read and decode one landing file; raise :class:`FileProblem` when it is quarantined
    whole (outside the landing zone, unsupported, unreadable, undecodable, a CSV without the
    required columns)."""
    suffix = path.suffix.lower()
    if not inside(path, landing):
        raise FileProblem(f"file resolves outside the landing zone ({path.resolve()}); "
                          "symlinks out of the landing zone are not read")
    try:
        if suffix not in SUPPORTED_SUFFIXES:
            with path.open("rb") as handle:
                raw = handle.read(RAW_CHARS).decode("utf-8", errors="replace")
            raise FileProblem(f"unsupported file type {suffix or '(none)'}; supported: "
                              f"{', '.join(sorted(SUPPORTED_SUFFIXES))}", raw=raw)
        if suffix == ".parquet":
            return LandingFile(suffix, records=pq.read_table(path).to_pylist(),
                               footer_rows=pq.read_metadata(path).num_rows)
        text, flags = decode_bytes(path.read_bytes())
    except (OSError, pa.ArrowException) as err:
        raise FileProblem(f"unreadable {suffix or 'file'}: {err}") from err
    if suffix == ".json":
        return LandingFile(suffix, flags=tuple(flags), records=label_studio_tasks(text))
    if suffix == ".csv":
        delimiter = csv_delimiter(text)
        if delimiter != ",":
            flags.append(f"csv_delimiter:{DELIMITER_NAMES.get(delimiter, delimiter)}")
        return LandingFile(suffix, text, tuple(flags), delimiter)
    return LandingFile(suffix, text, tuple(flags))


def read_file(path: Path, landing: Path, drop: str, vote_delimiter: str = "auto",
              ) -> tuple[list[dict[str, Any]], int]:
    """Rows parsed from one landing file (good and quarantined), and the rows the file holds,
    counted without the parser (:func:`count_rows`): the two must agree."""
    source_key = path.relative_to(landing).as_posix()
    source = (landing.resolve() / source_key).as_uri()
    try:
        opened = open_landing_file(path, landing)
    except FileProblem as problem:
        return [_file_problem(problem.reason, drop=drop, source=source, raw=problem.raw)], 1
    common = {"drop": drop, "source": source, "source_key": source_key,
              "vote_delimiter": vote_delimiter}
    flags = list(opened.flags)
    if opened.suffix == ".parquet":
        rows = [_row(rec, position=i, raw=json.dumps(rec, default=str), flags=[], **common)
                for i, rec in enumerate(opened.records or [])]
    elif opened.suffix == ".txt":
        record = {"text": opened.text, "label": path.parent.name}
        rows = [_row(record, position=0, raw=opened.text, flags=flags, **common)]
    elif opened.suffix == ".jsonl":
        rows = _parse_jsonl(opened.text, flags, common)
    elif opened.suffix == ".json":
        rows = _parse_export(opened.records or [], flags, common)
    else:
        rows = _parse_csv(opened.text, flags, common, opened.delimiter)
    return rows, count_rows(opened)


def parse_file(path: Path, landing: Path, drop: str, vote_delimiter: str = "auto",
               ) -> list[dict[str, Any]]:
    """Parse one landing file into rows (good and quarantined)."""
    return read_file(path, landing, drop, vote_delimiter)[0]


def count_rows(opened: LandingFile) -> int:
    """The rows a file holds, counted from the file alone: non-empty lines of a JSONL file
    (split on "\\n" only), CSV records after the header, the Parquet footer's row count, one per
    ``.txt`` file, the tasks of a Label Studio export. What the parser returns must add up to
    this."""
    if opened.suffix == ".parquet":
        return opened.footer_rows
    if opened.suffix == ".json":
        return len(opened.records or [])
    if opened.suffix == ".txt":
        return 1
    if opened.suffix == ".jsonl":
        return sum(1 for line in opened.text.split("\n") if line.strip())
    return count_csv_records(opened.text, opened.delimiter)


def count_csv_records(text: str, delimiter: str = ",") -> int:
    """Non-empty records after the header, as the csv module reads them; a CSV error ends the
    file, and what is left of it is one (quarantined) record."""
    records = 0
    reader = _csv_reader(text, delimiter)
    try:
        for fields in reader:
            records += bool(fields)
    except csv.Error:
        return max(records - 1, 0) + 1
    return max(records - 1, 0)


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


def label_studio_tasks(text: str) -> list[dict[str, Any]]:
    """The tasks of a ``.json`` landing file, which must be a Label Studio JSON export; raise
    :class:`FileProblem` (the file is quarantined whole) for anything else."""
    if not text.strip():
        return []  # an empty file has no rows
    try:
        return export_tasks(json.loads(text), "the .json file")
    except json.JSONDecodeError as err:
        raise FileProblem(f"invalid JSON at line {err.lineno}, column {err.colno} ({err.msg}): a "
                          ".json landing file must be a Label Studio JSON export (Export > JSON); "
                          "rows go in .jsonl files", raw=text[:RAW_CHARS]) from err
    except ValueError as err:
        raise FileProblem(str(err), raw=text[:RAW_CHARS]) from err


def _parse_export(tasks: list[dict[str, Any]], flags: list[str], common: dict[str, str],
                  ) -> list[dict[str, Any]]:
    """One row per exported task: its people's named votes as a review row (as ``finegate
    pull`` writes it), or quarantined when it has no usable vote or no text."""
    rows = []
    for number, task in enumerate(tasks, start=1):
        raw = json.dumps(task, ensure_ascii=False, default=str)
        reviewed = review_row(task)
        if reviewed.row is None:
            rows.append({**_file_problem(str(reviewed.problem), drop=common["drop"],
                                         source=common["source"], raw=raw),
                         "position": number})
            continue
        rows.append(_row(reviewed.row, position=number, raw=raw,
                         flags=flags, **common))
    return rows


def _csv_reader(text: str, delimiter: str) -> Any:
    csv.field_size_limit(2**31 - 1)  # a 5 MB article is one field
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)


def has_required_columns(header: list[str]) -> bool:
    """Whether a CSV header has a ``text`` column and a ``label`` or ``annotator_labels`` one."""
    return "text" in header and ("label" in header or "annotator_labels" in header)


def csv_delimiter(text: str) -> str:
    """The delimiter whose header row has the required columns: ``,`` unless the header shows
    another (sniffed among ``, ; tab |``); raise :class:`FileProblem` when none has them."""
    def header(delimiter: str) -> list[str]:
        try:
            return next(_csv_reader(text, delimiter), [])
        except csv.Error:
            return []

    if not text.strip() or has_required_columns(header(",")):
        return ","  # an empty file has no rows, not a bad header
    try:
        sniffed = csv.Sniffer().sniff(text[:SNIFF_CHARS], delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        sniffed = ""
    for delimiter in dict.fromkeys(sniffed + CSV_DELIMITERS):
        if has_required_columns(header(delimiter)):
            return delimiter
    raise FileProblem(
        f"CSV header {header(',')!r} has no 'text' column and 'label' (or 'annotator_labels') "
        "column with any of the delimiters , ; tab |; the first row must name the columns",
        raw=text[:RAW_CHARS])


def _parse_csv(text: str, flags: list[str], common: dict[str, str],
               delimiter: str = ",") -> list[dict[str, Any]]:
    reader = _csv_reader(text, delimiter)
    rows: list[dict[str, Any]] = []
    try:
        header = next(reader, None)
        if header is None:
            return []
        for fields in reader:
            if not fields:
                continue
            raw = _csv_line(fields, delimiter)
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


def _csv_line(fields: list[str], delimiter: str = ",") -> str:
    """A CSV row as it reads in a file, quoting kept (the raw content kept in quarantine)."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(fields)
    return buffer.getvalue()


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Parsed rows as one partition frame with ``PARSED_COLUMNS``."""
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
                      name: str, vote_delimiter: str) -> tuple[int, int, int, list[str]]:
    rows: list[dict[str, Any]] = []
    counted, miscounted = 0, []
    for path in paths:
        parsed, count = read_file(Path(path), Path(landing), drop, vote_delimiter)
        if len(parsed) != count:
            miscounted.append(f"{Path(path).relative_to(landing).as_posix()} holds {count} "
                              f"row(s), the reader returned {len(parsed)}")
        rows += parsed
        counted += count
    frame = rows_frame(rows)
    bad = frame["reason"].notna()
    good = write_parquet(frame.loc[~bad], Path(bronze), BRONZE_SCHEMA, name)
    rejected = reject(frame.loc[bad], "ingest", frame.loc[bad, "reason"])
    return good, write_quarantine(rejected, Path(quarantine), name), counted, miscounted


def ingest_drop(landing: Path, drop: str, lake: Lake, *, txt_files_per_partition: int = 128,
                vote_delimiter: str = "auto") -> IngestResult:
    """Parse one drop in parallel partitions (on the current Dask client); write bronze and
    ingest quarantine Parquet (``vote_delimiter`` splits votes given as a string).
    ``rows_read`` is counted from the files, not from the parser;
    files where the two disagree are listed in ``miscounted``."""
    import dask

    files = sorted(p for p in (landing / drop).rglob("*") if p.is_file())
    partitions = plan_partitions(files, txt_files_per_partition) or [[]]
    with lake.staged(lake.bronze(drop), lake.quarantine(drop, "ingest")) as (bronze, quarantine):
        counts = dask.compute(*[
            dask.delayed(_ingest_partition)(paths, str(landing), drop, str(bronze),
                                            str(quarantine), f"part-{i:05d}", vote_delimiter)
            for i, paths in enumerate(partitions)])
    return IngestResult(drop=drop, bronze_path=str(lake.bronze(drop)),
                        quarantine_path=str(lake.quarantine(drop, "ingest")),
                        rows_read=sum(c[2] for c in counts),
                        rows_bronze=sum(c[0] for c in counts),
                        rows_quarantined=sum(c[1] for c in counts),
                        miscounted=[m for c in counts for m in c[3]])
