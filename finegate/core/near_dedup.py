"""Near-duplicates in memory: LSH candidate pairs from band keys, verified by estimated Jaccard.

Signatures and band keys come from :mod:`finegate.core.minhash`. Two rows are candidates when
some band key is equal; a candidate pair is a near duplicate when the estimated Jaccard
similarity of the whole signatures reaches the threshold, so LSH false positives never merge.
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


def near_duplicate_clusters(signatures: np.ndarray, config: MinhashConfig) -> np.ndarray:
    """For every row (in keep order), the index of the first row of its near-duplicate
    cluster (its own index when it has none)."""
    pairs = verified_pairs(signatures, signatures,
                           candidate_pairs(band_keys(signatures, config)), config.threshold)
    clusters = UnionFind(len(signatures))
    for i, j in pairs:
        clusters.union(int(i), int(j))
    return np.array([clusters.find(i) for i in range(len(signatures))], dtype=np.int64)
