"""Near-duplicates in memory: LSH candidate pairs from band keys, verified by Jaccard.

Signatures and band keys come from :mod:`finegate.core.minhash`. Two rows are candidates when
some band key is equal; a candidate pair is a near duplicate when its Jaccard similarity
reaches the threshold, so LSH false positives never merge. The similarity is either the
**exact** Jaccard of the two shingle sets (:func:`exact_jaccard`, from
:func:`~finegate.core.minhash.shingle_sets`; what the dedup stage uses, as NeMo Curator's
optional Jaccard check does) or the MinHash **estimate** (the share of equal signature
positions, :func:`verified_pairs`; sd ~0.044 at 128 permutations, so a pair just above the
threshold is estimated below it about half the time).
"""

from __future__ import annotations

import numpy as np

from finegate.core.minhash import MinhashConfig, band_keys, estimated_jaccard


def candidate_pairs(keys_a: np.ndarray, keys_b: np.ndarray | None = None) -> np.ndarray:
    """Pairs ``(i, j)`` of rows sharing a band key: ``i`` in ``keys_a``, ``j`` in ``keys_b``
    (or ``j > i`` within ``keys_a`` when ``keys_b`` is None). Keys are ``(n, bands)`` uint64."""
    bands = keys_a.shape[1]
    same = keys_b is None
    keys_b = keys_a if keys_b is None else keys_b
    # one table of (key, row, side); keys of different bands never collide (band is hashed in)
    key = np.concatenate([keys_a.ravel(), keys_b.ravel()]) if not same else keys_a.ravel()
    row = np.concatenate([np.repeat(np.arange(len(keys_a)), bands),
                          np.repeat(np.arange(len(keys_b)), bands)]) if not same else \
        np.repeat(np.arange(len(keys_a)), bands)
    side = np.concatenate([np.zeros(keys_a.size, bool), np.ones(keys_b.size, bool)]) \
        if not same else np.zeros(keys_a.size, bool)
    order = np.argsort(key, kind="stable")
    key, row, side = key[order], row[order], side[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    # buckets of two (most of them) vectorised; larger ones one by one
    two = starts[sizes == 2]
    pairs = [_pairs_of_twos(row[two], row[two + 1], side[two], side[two + 1], same)]
    pairs += [_pairs_in_bucket(row[s:s + n], side[s:s + n], same)
              for s, n in zip(starts[sizes > 2], sizes[sizes > 2], strict=True)]
    pairs = [p for p in pairs if len(p)]
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def _pairs_of_twos(first: np.ndarray, second: np.ndarray, first_side: np.ndarray,
                   second_side: np.ndarray, same: bool) -> np.ndarray:
    if same:
        keep = first != second
        low, high = np.minimum(first, second)[keep], np.maximum(first, second)[keep]
        return np.stack([low, high], axis=1)
    cross = first_side != second_side
    left = np.where(first_side, second, first)[cross]
    right = np.where(first_side, first, second)[cross]
    return np.stack([left, right], axis=1)


def _pairs_in_bucket(rows: np.ndarray, sides: np.ndarray, same: bool) -> np.ndarray:
    if same:
        members = np.unique(rows)
        i, j = np.triu_indices(len(members), k=1)
        return np.stack([members[i], members[j]], axis=1)
    left, right = np.unique(rows[~sides]), np.unique(rows[sides])
    return np.stack(np.meshgrid(left, right, indexing="ij"), axis=-1).reshape(-1, 2)


def verified_pairs(signatures_a: np.ndarray, signatures_b: np.ndarray, pairs: np.ndarray,
                   threshold: float) -> np.ndarray:
    """The candidate ``pairs`` whose estimated Jaccard similarity is ≥ ``threshold``."""
    if not len(pairs):
        return pairs
    similarity = estimated_jaccard(signatures_a[pairs[:, 0]], signatures_b[pairs[:, 1]])
    return pairs[similarity >= threshold]


def exact_jaccard(sets_a: tuple[np.ndarray, np.ndarray], sets_b: tuple[np.ndarray, np.ndarray],
                  pairs: np.ndarray, block: int = 1 << 21) -> np.ndarray:
    """Exact Jaccard similarity of each pair ``(i, j)``: set ``i`` of ``sets_a`` against set
    ``j`` of ``sets_b`` (CSR ``(hashes, offsets)`` of sorted unique hashes, as
    :func:`~finegate.core.minhash.shingle_sets` returns). Two empty sets have similarity 1.0
    (as their MinHash estimate). Vectorised over blocks of about ``block`` hashes."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    (flat_a, off_a), (flat_b, off_b) = sets_a, sets_b
    size_a = (off_a[1:] - off_a[:-1])[pairs[:, 0]]
    size_b = (off_b[1:] - off_b[:-1])[pairs[:, 1]]
    shared = np.zeros(len(pairs), dtype=np.int64)
    total = np.cumsum(size_a + size_b)
    start = 0
    while start < len(pairs):
        base = total[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(total, base + block, side="right")))
        chunk = np.arange(start, stop)
        values = np.concatenate([_gather(flat_a, off_a[pairs[chunk, 0]], size_a[chunk]),
                                 _gather(flat_b, off_b[pairs[chunk, 1]], size_b[chunk])])
        owner = np.concatenate([np.repeat(chunk, size_a[chunk]), np.repeat(chunk, size_b[chunk])])
        order = np.lexsort((values, owner))
        values, owner = values[order], owner[order]
        same = (values[1:] == values[:-1]) & (owner[1:] == owner[:-1])  # in both sets
        shared[start:stop] = np.bincount(owner[1:][same] - start, minlength=stop - start)
        start = stop
    union = size_a + size_b - shared
    return np.where(union > 0, shared / np.maximum(union, 1), 1.0)


def _gather(flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``flat[starts[k]:starts[k] + sizes[k]]`` for every ``k``, concatenated."""
    if not sizes.sum():
        return flat[:0]
    within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return flat[np.repeat(starts, sizes) + within]


EXACT_MARGIN = 0.2  # only estimates this close to a threshold are checked exactly


def uncertain(estimate: np.ndarray, low: float, high: float,
              margin: float = EXACT_MARGIN) -> np.ndarray:
    """Where a MinHash ``estimate`` is within ``margin`` of the thresholds ``low..high`` and so
    needs the exact Jaccard. Further away it is trusted: its sd is at most 0.044 at 128
    permutations (``sqrt(J(1-J)/num_perm)``), so 0.2 is 4.5 sd (~3e-6 chance of a wrong side);
    this keeps the texts read per night to the pairs near a threshold."""
    return (estimate >= low - margin) & (estimate < high + margin)


def exact_verified_pairs(sets_a: tuple[np.ndarray, np.ndarray],
                         sets_b: tuple[np.ndarray, np.ndarray], pairs: np.ndarray,
                         threshold: float) -> np.ndarray:
    """The candidate ``pairs`` whose exact Jaccard similarity is ≥ ``threshold``."""
    if not len(pairs):
        return pairs
    return pairs[exact_jaccard(sets_a, sets_b, pairs) >= threshold]


class UnionFind:
    """Disjoint sets over ``0..size-1``; a set's root is its smallest member."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        """The root of ``i``'s set."""
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        """Merge the sets of ``a`` and ``b``."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_clusters(signatures: np.ndarray, config: MinhashConfig,
                            sets: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """For every row (in keep order), the index of the first row of its near-duplicate
    cluster (its own index when it has none). Candidates are verified on the exact Jaccard of
    the shingle ``sets`` when given, else on the estimate."""
    candidates = candidate_pairs(band_keys(signatures, config))
    pairs = (exact_verified_pairs(sets, sets, candidates, config.threshold) if sets is not None
             else verified_pairs(signatures, signatures, candidates, config.threshold))
    clusters = UnionFind(len(signatures))
    for i, j in pairs:
        clusters.union(int(i), int(j))
    return np.array([clusters.find(i) for i in range(len(signatures))], dtype=np.int64)
