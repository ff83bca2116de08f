"""MinHash signatures and LSH band keys for near-duplicate text, in pure NumPy.

A text's shingles are its word n-grams, exactly as ``re.findall(r"\\w+", text.casefold())``
splits it into words (a text with at most ``shingle_size`` words has one shingle: all its
words; a text without words has none). Everything is vectorised over a whole batch of texts:

1. **Shingle hashes** (:func:`shingle_hashes`). Texts are case-folded, joined and decoded to
   code points; word characters are looked up in a table built from the ``\\w`` regex itself,
   so words match ``re.findall`` exactly. Each word is hashed once with a polynomial hash over
   its code points (prefix sums mod 2**64, no per-word Python objects) and a MurmurHash3
   finaliser; the words of an n-gram are combined arithmetically (no string joins). The hashes
   depend only on the text and the Unicode tables of the Python version: they are the same in
   every process and on every machine (no salted ``hash()``).
2. **Signatures** (:func:`signatures`). Shingle ``h`` enters permutation ``k`` as
   ``(a_k * x + b_k) mod 2**32`` with ``x = h >> 32`` and ``a_k`` odd, so each permutation is a
   bijection of the 32-bit range. ``a`` and ``b`` are drawn from ``RandomState(seed)`` exactly as
   ``datasketch`` >= 2.0 draws them for its default ``affine32`` scheme, but the shingle hash
   differs, so these signatures must not be mixed with ``datasketch`` ones. The permuted values
   of all shingles of a batch are computed in blocks of about 1M values and reduced per text
   with ``np.minimum.reduceat``.
3. **Band keys** (:func:`band_keys`): one 64-bit bucket key per LSH band, from the band's
   values and its index, for an incremental LSH index kept as a table (e.g. in Parquet).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

_U64 = np.uint64
_MAX_VALUE = np.uint32(0xFFFFFFFF)  # signature value of a text without shingles
_CHAR_BASE = _U64(0x100000001B3)  # odd: the FNV-1 64-bit prime, base of the word hash
_WORD_BASE = _U64(0x9E3779B97F4A7C15)  # odd: combines the word hashes of an n-gram
_SHINGLE_SEED = _U64(0x243F6A8885A308D3)  # start value of every n-gram hash
_BAND_SEED = _U64(0x13198A2E03707344)  # start value of every band key
_FMIX_1 = _U64(0xFF51AFD7ED558CCD)
_FMIX_2 = _U64(0xC4CEB9FE1A85EC53)
_SHIFT = _U64(33)
_HIGH = _U64(32)
_TEXT_BLOCK_CHARS = 1 << 19  # texts are shingled in batches of about this many characters
_PERMUTED_BLOCK = 1 << 20  # permuted values computed at once (4 MiB of uint32)


@dataclass(frozen=True)
class MinhashConfig:
    """Settings of near-duplicate detection: shingles, signature length, threshold, seed.

    ``threshold`` is the estimated Jaccard similarity from which two texts are near
    duplicates; it also fixes the LSH banding (:attr:`banding`).
    """

    shingle_size: int = 2
    num_perm: int = 128
    threshold: float = 0.5
    seed: int = 1

    def __post_init__(self) -> None:
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {self.shingle_size}")
        if self.num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {self.num_perm}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")

    @property
    def banding(self) -> tuple[int, int]:
        """LSH ``(bands, rows)`` for this threshold and ``num_perm`` (:func:`optimal_banding`)."""
        return optimal_banding(self.threshold, self.num_perm)


@functools.lru_cache(maxsize=64)
def optimal_banding(threshold: float, num_perm: int) -> tuple[int, int]:
    """The LSH ``(bands, rows)``, ``bands * rows <= num_perm``, of least FP + FN probability.

    Same choice as ``datasketch.lsh._optimal_param`` with equal weights: the false-positive
    probability is the integral of ``1 - (1 - s**r)**b`` over ``[0, threshold]``, the
    false-negative one that of ``(1 - s**r)**b`` over ``[threshold, 1]``. Both integrands are
    polynomials of degree ``b * r <= num_perm``, which Gauss-Legendre quadrature with
    ``num_perm // 2 + 1`` nodes integrates exactly (no SciPy needed). Ties go to the smallest
    ``bands``, then the smallest ``rows``, as in ``datasketch``.
    """
    if num_perm < 1 or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"need num_perm >= 1 and 0 <= threshold <= 1, got {num_perm}, {threshold}")
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)])
    bands, rows = pairs[:, :1].astype(float), pairs[:, 1:].astype(float)
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    below = threshold * (nodes + 1) / 2  # nodes mapped onto [0, threshold]
    above = threshold + (1 - threshold) * (nodes + 1) / 2  # onto [threshold, 1]
    false_pos = (1 - (1 - below**rows) ** bands) @ weights * (threshold / 2)
    false_neg = (1 - above**rows) ** bands @ weights * ((1 - threshold) / 2)
    best = int(np.argmin(0.5 * false_pos + 0.5 * false_neg))
    return int(pairs[best, 0]), int(pairs[best, 1])


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """Sorted unique 64-bit hashes (uint64) of the ``size``-word shingles of ``text``.

    Words are ``re.findall(r"\\w+", text.casefold())``; a text with at most ``size`` words has
    one shingle (all its words), a text without words none. The same shingle always gets the
    same hash, in any process and on any machine.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    hashes, _ = _batch_shingle_hashes([text], size)
    return np.unique(hashes)


def shingle_sets(texts: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The shingle sets of ``texts`` as one CSR pair ``(hashes, offsets)``: text ``i``'s sorted
    unique 64-bit shingle hashes are ``hashes[offsets[i]:offsets[i + 1]]`` (the same hashes as
    :func:`shingle_hashes`, whose high 32 bits the signatures permute). For exact Jaccard.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    texts = list(texts)
    parts, counts = [], np.zeros(len(texts), dtype=np.int64)
    for lo, hi in _text_blocks(texts, _TEXT_BLOCK_CHARS):
        hashes, per_text = _batch_shingle_hashes(texts[lo:hi], size)
        text_of = np.repeat(np.arange(hi - lo), per_text)
        order = np.lexsort((hashes, text_of))
        hashes, text_of = hashes[order], text_of[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = (hashes[1:] != hashes[:-1]) | (text_of[1:] != text_of[:-1])
        parts.append(hashes[first])
        counts[lo:hi] = np.bincount(text_of[first], minlength=hi - lo)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return (np.concatenate(parts) if parts else np.empty(0, _U64)), offsets


def signatures(texts: Sequence[str], config: MinhashConfig) -> np.ndarray:
    """MinHash signatures of ``texts``: an ``(len(texts), config.num_perm)`` uint32 array.

    Row ``i`` holds, for every permutation ``k``, the least ``(a_k * x + b_k) mod 2**32`` over
    the shingles of ``texts[i]`` (``x``: the high 32 bits of :func:`shingle_hashes`). A text
    without words gets ``2**32 - 1`` everywhere. Texts are processed in batches of about
    0.5M characters and permuted values in blocks of about 1M, so memory stays bounded for any
    number of texts (a single text takes memory in proportion to its length).
    """
    texts = list(texts)
    a, b = _permutations(config.num_perm, config.seed)
    result = np.full((len(texts), config.num_perm), _MAX_VALUE, dtype=np.uint32)
    for lo, hi in _text_blocks(texts, _TEXT_BLOCK_CHARS):
        hashes, counts = _batch_shingle_hashes(texts[lo:hi], config.shingle_size)
        values = (hashes >> _HIGH).astype(np.uint32)
        _min_permuted_into(result[lo:hi], values, counts, a, b)
    return result


def band_keys(signatures: np.ndarray, config: MinhashConfig) -> np.ndarray:
    """One 64-bit LSH bucket key per band: an ``(n, bands)`` uint64 array.

    Band ``j`` covers signature columns ``j * rows`` to ``(j + 1) * rows`` (``(bands, rows) =
    config.banding``; columns past ``bands * rows`` are unused). Its key hashes the band's
    values and ``j``, so equal values in the same band give equal keys and the keys of
    different bands can share one column. Two texts are LSH candidates when some band has
    equal keys. Keys are only comparable between signatures of the same config.
    """
    bands, rows = config.banding
    values = np.asarray(signatures)
    if values.ndim != 2 or values.shape[1] < bands * rows:
        raise ValueError(f"need an (n, >= {bands * rows}) signature array, got {values.shape}")
    blocks = values[:, : bands * rows].reshape(len(values), bands, rows).astype(_U64)
    keys = np.empty((len(values), bands), dtype=_U64)
    keys[:] = _fmix64(np.arange(bands, dtype=_U64) + _BAND_SEED)
    for column in range(rows):
        keys ^= blocks[:, :, column]
        keys = _fmix64(keys)
    return keys


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity: the share of positions where signatures agree.

    Row-wise for 2-D inputs (broadcasting like ``a == b``); a 0-d array for two 1-D ones.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[-1] != b.shape[-1] or a.shape[-1] == 0:
        raise ValueError(f"signature lengths differ or are 0: {a.shape} vs {b.shape}")
    return np.asarray(np.count_nonzero(a == b, axis=-1) / a.shape[-1])


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` as read-only ``(num_perm, 1)`` uint32 columns; ``a`` odd (as ``datasketch``)."""
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    for column in (a, b):
        column.flags.writeable = False
    return a[:, None], b[:, None]


def _text_blocks(texts: Sequence[str], max_chars: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of consecutive texts with about ``max_chars`` characters each."""
    start, chars = 0, 0
    for index, text in enumerate(texts):
        if chars and chars + len(text) > max_chars:
            yield start, index
            start, chars = index, 0
        chars += len(text) + 1
    if start < len(texts):
        yield start, len(texts)


def _batch_shingle_hashes(texts: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of a batch (in text order, repeats kept) and the count per text."""
    folded = [text.casefold() for text in texts]
    lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
    codes = np.frombuffer(" ".join(folded).encode("utf-32-le", "surrogatepass"), np.uint32)
    is_word = _word_char_table()[codes].view(np.int8)
    edges = np.diff(is_word, prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    words = _word_hashes(codes, starts, ends)
    text_of_word = np.searchsorted(np.cumsum(lengths + 1), starts, side="right")
    word_counts = np.bincount(text_of_word, minlength=len(texts))
    return _ngram_hashes(words, text_of_word, word_counts, size)


@functools.cache
def _word_char_table() -> np.ndarray:
    """Whether each code point (0 to 0x10FFFF) is a ``\\w`` character of Python's ``re``."""
    every_char = "".join(map(chr, range(0x110000)))
    spans = np.array([m.span() for m in re.finditer(r"\w+", every_char)], dtype=np.int64)
    marks = np.zeros(0x110001, dtype=np.int8)
    np.add.at(marks, spans[:, 0], 1)
    np.add.at(marks, spans[:, 1], -1)
    table = np.cumsum(marks[:-1], dtype=np.int8).astype(bool)
    table.flags.writeable = False
    return table


def _word_hashes(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hash of each word ``codes[starts[i]:ends[i]]``, independent of its position.

    Polynomial hash ``sum(c_j * B**j)`` mod 2**64 from prefix sums of ``c_i * B**i``, moved to
    position 0 by ``B**-start`` (``B`` is odd, so it has an inverse mod 2**64), then finalised.
    """
    powers, inverse_powers = _powers(len(codes) + 1)
    prefix = np.zeros(len(codes) + 1, dtype=_U64)
    np.cumsum(codes * powers[: len(codes)], out=prefix[1:])
    return _fmix64((prefix[ends] - prefix[starts]) * inverse_powers[starts])


def _powers(length: int) -> tuple[np.ndarray, np.ndarray]:
    """``B**i`` and ``B**-i`` mod 2**64 for ``i < length`` (cached up to the usual batch size)."""
    if length <= 2 * _TEXT_BLOCK_CHARS:
        powers, inverse_powers = _common_power_tables()
        return powers[:length], inverse_powers[:length]
    return _power_tables(length)


@functools.cache
def _common_power_tables() -> tuple[np.ndarray, np.ndarray]:
    """The power tables for a usual batch, computed once."""
    return _power_tables(2 * _TEXT_BLOCK_CHARS)


def _power_tables(length: int) -> tuple[np.ndarray, np.ndarray]:
    """``B**i`` and ``B**-i`` mod 2**64 for ``i < length``, as read-only uint64 arrays."""
    tables = []
    for base in (_CHAR_BASE, _U64(pow(int(_CHAR_BASE), -1, 1 << 64))):
        table = np.empty(length, dtype=_U64)
        table[0] = 1
        np.cumprod(np.full(length - 1, base, dtype=_U64), out=table[1:])
        table.flags.writeable = False
        tables.append(table)
    return tables[0], tables[1]


def _ngram_hashes(
    words: np.ndarray, text_of_word: np.ndarray, word_counts: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the ``size``-word n-grams of each text (texts of fewer words: one, of all).

    The hash of words ``w_1..w_k`` is ``fmix64(((S * W + w_1) * W + w_2) ... * W + w_k)``:
    it depends on the order and the number of words (``S``, ``W`` fixed odd constants).
    """
    count = len(words)
    hashes = np.full(count, _SHINGLE_SEED, dtype=_U64)
    same_text = np.ones(count, dtype=bool)
    for offset in range(size):
        kept = max(count - offset, 0)  # positions that have a word ``offset`` places on
        same_text[kept:] = False
        same_text[:kept] &= text_of_word[offset:] == text_of_word[:kept]
        shifted = np.zeros(count, dtype=_U64)
        shifted[:kept] = words[offset:]
        hashes = np.where(same_text, hashes * _WORD_BASE + shifted, hashes)
    first_words = np.cumsum(word_counts) - word_counts
    short = np.flatnonzero((word_counts > 0) & (word_counts < size))
    same_text[first_words[short]] = True  # texts with fewer words: one shingle of all words
    shingle_counts = np.where(word_counts >= size, word_counts - size + 1, word_counts > 0)
    return _fmix64(hashes[same_text]), shingle_counts


def _min_permuted_into(
    result: np.ndarray, values: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray
) -> None:
    """Lower ``result[i]`` to the least ``a * x + b`` (mod 2**32) over the values of text ``i``.

    ``values`` holds the texts' values one text after another (``counts[i]`` for text ``i``).
    They are permuted in blocks of about 1M results; a text cut by a block edge is lowered by
    both blocks.
    """
    ends = np.cumsum(counts)
    rows = np.flatnonzero(counts)  # texts with values; reduceat cannot take empty segments
    starts, ends = ends[rows] - counts[rows], ends[rows]
    step = max(1, _PERMUTED_BLOCK // len(a))
    buffer = np.empty((len(a), min(step, len(values))), dtype=np.uint32)
    for lo in range(0, len(values), step):
        hi = min(lo + step, len(values))
        first = np.searchsorted(ends, lo, side="right")
        stop = np.searchsorted(starts, hi, side="left")
        block = buffer[:, : hi - lo]
        np.multiply(a, values[lo:hi], out=block)
        np.add(block, b, out=block)
        least = np.minimum.reduceat(block, np.maximum(starts[first:stop], lo) - lo, axis=1)
        texts = rows[first:stop]
        result[texts] = np.minimum(result[texts], least.T)


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that mixes every bit into every bit)."""
    values = values ^ (values >> _SHIFT)
    values *= _FMIX_1
    values ^= values >> _SHIFT
    values *= _FMIX_2
    values ^= values >> _SHIFT
    return values
