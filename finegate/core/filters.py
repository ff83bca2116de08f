"""Heuristic quality filters: small named rules over one text, each with its own thresholds.

As in DataTrove's Gopher/C4 filters and NeMo Curator's heuristic filters, a rule only says
whether a text fails and why (``"412 symbols per 1000 words, above 0.1"``); the clean stage
writes the row to quarantine as ``filter:<name>: <why>`` or keeps it with the flag
``filter:<name>``. Word statistics are taken from the cleaned text; line statistics from the
raw text's lines (cleaning collapses newlines), each line cleaned.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from finegate.core.config import (
    AlphaShareRule,
    DuplicateLinesRule,
    DuplicateNgramRule,
    FiltersConfig,
    LanguageRule,
    LineShareRule,
    MeanWordLengthRule,
    SymbolRatioRule,
    TopNgramRule,
    WordCountRule,
)

ELLIPSES = ("...", "…")
BULLETS = ("•", "●", "○", "◦", "▪", "■", "□", "‣", "⁃", "-", "*", "–", "·", "→", ">")


@dataclass(frozen=True)
class Document:
    """A text as the rules see it: its cleaned text, its words and its non-empty lines."""

    text: str
    words: tuple[str, ...]
    lines: tuple[str, ...]


def document(text: str, lines: list[str] | None = None) -> Document:
    """A :class:`Document` of a cleaned ``text``; ``lines`` default to the text as one line."""
    lines = [line for line in (lines or [text]) if line]
    return Document(text, tuple(text.split()), tuple(lines))


def word_count(doc: Document, rule: WordCountRule) -> str | None:
    """Too few or too many words."""
    n = len(doc.words)
    if n < rule.min_words:
        return f"{n} words, below min_words {rule.min_words}"
    if n > rule.max_words:
        return f"{n} words, above max_words {rule.max_words}"
    return None


def mean_word_length(doc: Document, rule: MeanWordLengthRule) -> str | None:
    """Mean length of the words with a letter or digit (not bare punctuation or bullets),
    outside the bounds."""
    words = [w for w in doc.words if any(c.isalnum() for c in w)]
    if not words:
        return None
    mean = sum(len(w) for w in words) / len(words)
    if mean < rule.min_length:
        return f"mean word length {mean:.2f}, below {rule.min_length}"
    if mean > rule.max_length:
        return f"mean word length {mean:.2f}, above {rule.max_length}"
    return None


def alpha_share(doc: Document, rule: AlphaShareRule) -> str | None:
    """Too small a share of the non-space characters are letters."""
    chars = [c for c in doc.text if not c.isspace()]
    if not chars:
        return None
    share = sum(c.isalpha() for c in chars) / len(chars)
    if share < rule.min_share:
        return f"alphabetic share {share:.3f}, below {rule.min_share}"
    return None


def symbol_count(text: str) -> int:
    """Hashes, ellipses and math/other Unicode symbols (categories Sm, So) in ``text``."""
    ellipses = text.count("...") + text.count("…")
    other = sum(1 for c in text if c == "#" or unicodedata.category(c) in ("Sm", "So"))
    return ellipses + other


def symbol_ratio(doc: Document, rule: SymbolRatioRule) -> str | None:
    """Too many symbols per word."""
    if not doc.words:
        return None
    ratio = symbol_count(doc.text) / len(doc.words)
    if ratio > rule.max_ratio:
        return f"{ratio:.3f} symbols per word, above {rule.max_ratio}"
    return None


def duplicate_lines(doc: Document, rule: DuplicateLinesRule) -> str | None:
    """Too many lines (or too many characters in lines) that repeat an earlier line."""
    if len(doc.lines) < rule.min_lines:
        return None
    seen: set[str] = set()
    repeated = repeated_chars = 0
    for line in doc.lines:
        if line in seen:
            repeated += 1
            repeated_chars += len(line)
        seen.add(line)
    line_share = repeated / len(doc.lines)
    char_share = repeated_chars / max(sum(len(line) for line in doc.lines), 1)
    if line_share > rule.max_line_share:
        return f"{line_share:.3f} of lines repeated, above {rule.max_line_share}"
    if char_share > rule.max_char_share:
        return f"{char_share:.3f} of characters in repeated lines, above {rule.max_char_share}"
    return None


def _ngrams(words: tuple[str, ...], n: int) -> list[str]:
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def top_ngrams(doc: Document, rule: TopNgramRule) -> str | None:
    """The most frequent n-gram covers too large a share of the characters (Gopher)."""
    if len(doc.words) < rule.min_words:
        return None
    total = max(len(doc.text), 1)
    for n, limit in sorted(rule.max_shares.items()):
        grams = Counter(_ngrams(doc.words, n))
        if not grams:
            continue
        gram, count = grams.most_common(1)[0]
        share = len(gram) * count / total if count > 1 else 0.0
        if share > limit:
            return f"top {n}-gram {gram[:40]!r} covers {share:.3f} of characters, above {limit}"
    return None


def duplicate_ngrams(doc: Document, rule: DuplicateNgramRule) -> str | None:
    """Too large a share of the characters lies in repeated n-grams (Gopher; as DataTrove, a
    repeated n-gram is skipped over so overlapping repeats count once)."""
    if len(doc.words) < rule.min_words:
        return None
    total = max(len(doc.text), 1)
    for n, limit in sorted(rule.max_shares.items()):
        seen: set[tuple[str, ...]] = set()
        repeated, i = 0, 0
        while i <= len(doc.words) - n:
            gram = doc.words[i:i + n]
            if gram in seen:
                repeated += sum(len(w) for w in gram) + n - 1
                i += n
            else:
                seen.add(gram)
                i += 1
        share = repeated / total
        if share > limit:
            return f"{share:.3f} of characters in repeated {n}-grams, above {limit}"
    return None


def _line_share(doc: Document, rule: LineShareRule, matches: Callable[[str], bool],
                what: str) -> str | None:
    if len(doc.lines) < rule.min_lines:
        return None
    share = sum(1 for line in doc.lines if matches(line)) / len(doc.lines)
    if share > rule.max_share:
        return f"{share:.3f} of lines {what}, above {rule.max_share}"
    return None


def ellipsis_lines(doc: Document, rule: LineShareRule) -> str | None:
    """Too many lines end in an ellipsis (truncated teasers, link lists)."""
    return _line_share(doc, rule, lambda line: line.rstrip().endswith(ELLIPSES),
                       "ending in an ellipsis")


def bullet_lines(doc: Document, rule: LineShareRule) -> str | None:
    """Too many lines start with a bullet (menus, lists without prose)."""
    return _line_share(doc, rule, lambda line: line.lstrip().startswith(BULLETS),
                       "starting with a bullet")


@cache
def language_detector() -> Any:
    """lingua's detector over all its languages, in low-accuracy mode (fast, ~150 MB); built
    once per process, so once per Dask worker."""
    from lingua import LanguageDetectorBuilder

    return (LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode()
            .with_preloaded_language_models().build())


@cache
def _languages(codes: tuple[str, ...]) -> tuple[Any, ...]:
    from lingua import IsoCode639_1, Language

    try:
        return tuple(Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper()))
                     for c in codes)
    except AttributeError as error:
        raise ValueError(f"filters.language.languages has an unknown ISO 639-1 code in "
                         f"{list(codes)} ({error}); use two-letter codes such as 'en', "
                         "'de'") from None


def language(doc: Document, rule: LanguageRule) -> str | None:
    """The text is not (confidently) in one of the configured languages; short texts pass."""
    if len(doc.text) < rule.min_chars:
        return None
    wanted = _languages(tuple(rule.languages))
    detector = language_detector()
    sample = doc.text[:rule.max_chars]
    confidence = sum(detector.compute_language_confidence(sample, lang) for lang in wanted)
    if confidence >= rule.min_confidence:
        return None
    found = detector.detect_language_of(sample)
    name = found.iso_code_639_1.name.lower() if found is not None else "unknown"
    return (f"language {name}; confidence in {'/'.join(rule.languages)} {confidence:.3f}, "
            f"below {rule.min_confidence}")


# The rules in the order they run: cheap counts first, the language model last.
RULES: dict[str, Callable[[Document, Any], str | None]] = {
    "word_count": word_count, "mean_word_length": mean_word_length,
    "alpha_share": alpha_share, "symbol_ratio": symbol_ratio,
    "duplicate_lines": duplicate_lines, "top_ngrams": top_ngrams,
    "duplicate_ngrams": duplicate_ngrams, "ellipsis_lines": ellipsis_lines,
    "bullet_lines": bullet_lines, "language": language,
}


@dataclass(frozen=True)
class Verdict:
    """What the filters decided on one text: the first drop reason, and every flag."""

    reason: str | None
    flags: tuple[str, ...]


def judge(doc: Document, config: FiltersConfig) -> Verdict:
    """Run the enabled rules on ``doc``; stop at the first rule that drops it."""
    flags: list[str] = []
    if not config.enabled:
        return Verdict(None, ())
    for name, rule_check in RULES.items():
        rule = getattr(config, name)
        if not rule.enabled:
            continue
        why = rule_check(doc, rule)
        if why is None:
            continue
        if rule.action == "drop":
            return Verdict(f"filter:{name}: {why}", tuple(flags))
        flags.append(f"filter:{name}")
    return Verdict(None, tuple(flags))


def filter_name(reason_or_flag: str) -> str | None:
    """``word_count`` from ``filter:word_count: 2 words...`` (or the flag); None otherwise."""
    if not reason_or_flag.startswith("filter:"):
        return None
    return reason_or_flag[len("filter:"):].split(":", 1)[0]
