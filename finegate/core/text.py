"""Text and label helpers every stage shares: normalisation, content hash, label lookup, votes."""

from __future__ import annotations

import hashlib
import html
import re
import sys
import unicodedata
from collections import Counter
from functools import cache

from finegate.core.config import LabelSet

_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Invisible format characters (Unicode category Cf) that stand *between* words: they become a
# space, so "word\u200bword" is two words. Every other Cf character (ZWJ/ZWNJ, word joiner,
# BOM, soft hyphen, bidi embeddings/overrides/isolates U+202A-202E and U+2066-2069, tags) is
# removed: it joins, hints or steers rendering, and carries no content of its own.
# Zero-width space, invisible separator, Mongolian vowel separator.
INVISIBLE_SEPARATORS = "\u200b\u2063\u180e"


@cache
def _format_characters() -> dict[int, str | None]:
    """``str.translate`` table over every Cf character: separators to a space, others removed."""
    table: dict[int, str | None] = {
        code: None for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cf"}
    table.update({ord(c): " " for c in INVISIBLE_SEPARATORS})
    return table


def strip_format_characters(text: str) -> str:
    """``text`` without invisible format characters (Cf): separators become spaces."""
    return text.translate(_format_characters())


def normalise_text(text: str) -> str:
    """Strip HTML (tags, scripts, entities), invisible format characters (zero-width, BOM, bidi
    controls, soft hyphen) and control characters (NUL...), apply Unicode NFKC and collapse
    whitespace. A text of nothing but these comes out empty."""
    if "<" in text:
        text = _TAG.sub(" ", _SCRIPT_OR_STYLE.sub(" ", text))
    text = unicodedata.normalize("NFKC", html.unescape(text))
    text = strip_format_characters(text)
    return _WHITESPACE.sub(" ", _CONTROL.sub(" ", text)).strip()


def text_hash(text: str) -> str:
    """Hash of the content ignoring case and whitespace: equal hashes are exact duplicates."""
    return hashlib.sha1(_WHITESPACE.sub(" ", text).strip().casefold().encode()).hexdigest()


def label_key(label: str) -> str:
    """The form labels are compared in: case-folded, without spaces, dashes or underscores."""
    label = strip_format_characters(unicodedata.normalize("NFKC", label))
    return re.sub(r"[\s_\-]+", "", label).casefold()


def label_lookup(label_set: LabelSet) -> dict[str, str]:
    """Map every accepted label variant (by :func:`label_key`) to its canonical label."""
    lookup = {label_key(label): label for label in label_set.labels}
    for variant, canonical in label_set.aliases.items():
        if canonical not in label_set.labels:
            raise ValueError(f"label alias {variant!r} points to {canonical!r}, "
                             f"which is not in the label set {list(label_set.labels)}")
        lookup[label_key(variant)] = canonical
    return lookup


def consensus(votes: list[str]) -> str:
    """The majority label of the votes; ties go to the alphabetically first label."""
    counts = Counter(votes)
    best = max(counts.values())
    return min(label for label, n in counts.items() if n == best)
