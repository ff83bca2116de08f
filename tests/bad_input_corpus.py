"""A corpus of bad landing input, built in a temp folder by the tests that use it.

Each entry says where its rows must end up. Built rather than checked in, so that binary
oddities (NUL bytes, invalid UTF-8, a 5 MB row) stay reviewable as code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

GOOD = "A perfectly ordinary news story about the {} market and its many players."


def good(i: int, label: str = "tech") -> dict:
    return {"id": f"ok-{i}", "text": GOOD.format(i), "label": label}


def write_bad_input_corpus(landing: Path, outside: Path) -> dict[str, int]:
    """Write the corpus under ``landing`` (drops ``bad1``..``bad3`` and an empty drop).

    ``outside`` is a file outside the landing zone that a symlink points to. Returns the
    expected number of quarantined rows per reason prefix.
    """
    bad1, bad2, bad3 = landing / "bad1", landing / "bad2", landing / "bad3"
    for folder in (bad1, bad2, bad3, landing / "zero-byte-drop"):
        folder.mkdir(parents=True)
    lines = [json.dumps(good(i)) for i in range(10)]
    lines += ['{"id": "t1", "text": "truncated', '{"id": "t2", "te',
              json.dumps({"id": "n1", "text": None, "label": "tech"}),
              json.dumps({"id": "n2", "text": "", "label": "tech"}),
              json.dumps({"id": "n3", "text": " \t\n ", "label": "tech"}),
              json.dumps({"id": "u1", "text": GOOD.format("weather"), "label": "weather"}),
              json.dumps({"id": "ok-3", "text": "Different content, same id as ok-3, "
                                             "from a later line.", "label": "tech"}),
              json.dumps([1, 2, 3]),
              # only invisible characters: zero-width space/joiners, BOM, word joiner, bidi
              json.dumps({"id": "z1", "label": "tech",
                          "text": "\u200b\u200c\u200d\ufeff\u2060\u202e\u2066\u2069\u00ad"}),
              # zero-width spaces between words must not glue them together
              json.dumps({"id": "z2", "text": "Zero\u200bwidth\u200bspaces between the "
                                             "words\u200bof a story about\u200dchips",
                          "label": "tech"})]
    (bad1 / "mixed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (bad1 / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(good(100)).encode() + b"\n")
    latin = json.dumps({"id": "l1", "text": "caf\u00e9 society news from the " * 3,
                        "label": "tech"}, ensure_ascii=False).encode("latin-1")
    (bad1 / "latin1.jsonl").write_bytes(latin + b"\n")
    (bad1 / "empty.jsonl").write_bytes(b"")
    (bad1 / "huge.jsonl").write_text(json.dumps(
        {"id": "huge", "text": "word " * 1_000_000, "label": "tech"}) + "\n")

    (bad2 / "quoted.csv").write_text(
        'id,text,label\n'
        'q1,"A story with a\nquoted newline inside it, long enough",tech\n'
        'q2,"too many",tech,extra\n'
        'q3,"A story with a NUL \x00 byte in it, long enough",tech\n'
        'q4,"A story without its label column filled in"\n', encoding="utf-8")
    pd.DataFrame({"id": [1, 2], "text": [123, 456], "label": ["tech", "tech"]}).to_parquet(
        bad2 / "wrong_types.parquet")
    pd.DataFrame({"id": ["m1"], "text": [GOOD.format("m1")]}).to_parquet(
        bad2 / "missing_label.parquet")
    (bad2 / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all")
    (bad2 / "notes.docx").write_bytes(b"PK\x03\x04 binary")
    (bad2 / "escape.jsonl").symlink_to(outside)

    # encodings: UTF-16/32 with a BOM are decoded; UTF-16 without a BOM is quarantined once
    wide = [{"id": "w1", "text": "Ünïcode news written by a Windows tool, in UTF-16",
             "label": "sports"},
            {"id": "w2", "text": "Another sixteen-bit story: the striker’s late goal",
             "label": "sports"}]
    wide_lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in wide)
    (bad3 / "utf16.jsonl").write_text(wide_lines, encoding="utf-16")  # with its BOM
    (bad3 / "utf32.csv").write_text("id,text,label\nw3,A thirty-two bit encoded article "
                                    "on the network,tech\n", encoding="utf-32")
    (bad3 / "utf16-nobom.jsonl").write_bytes(wide_lines.encode("utf-16-le") * 4)
    # CSV delimiters: ';' is detected from the header; a header without the columns is one row
    (bad3 / "semicolon.csv").write_text(
        "id;text;label\ns1;A semicolon separated row, with a comma inside;tech\n"
        "s2;\"Quoted; with a semicolon of its own\";sports\n", encoding="utf-8")
    (bad3 / "no_text_column.csv").write_text(
        "id,body,category\nn1,a body,tech\nn2,another,sports\nn3,and more,tech\n")

    # schema drift: a later drop with other columns and integer ids
    pd.DataFrame({"id": [10, 11], "text": [GOOD.format("drift-a"), GOOD.format("drift-b")],
                  "label": ["TECH", "Sports "], "extra": [1, 2]}).to_parquet(
        bad3 / "drifted.parquet")
    return {
        "invalid JSON": 2, "missing text": 3, "record is a list": 1, "unknown label": 1,
        "CSV row has": 2, "text is a int": 2, "missing label": 1, "unreadable .parquet": 1,
        "unsupported file type": 1, "file resolves outside the landing zone": 1,
        "empty text after cleaning": 1, "file looks like UTF-16-LE": 1, "CSV header": 1,
    }
