"""Near-duplicates: MinHash signatures over word shingles, clustered with LSH (``datasketch``).

Signatures are computed per Parquet partition (on Dask workers); the LSH index and the
clustering run on the small signature matrix. Candidate pairs from LSH are verified with the
estimated Jaccard similarity before they join a cluster, so LSH false positives do not merge.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_WORD = re.compile(r"\w+")


def shingles(text: str, size: int) -> set[bytes]:
    """The set of ``size``-word shingles of a text (case-folded, punctuation ignored)."""
    words = _WORD.findall(text.casefold())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


def minhash_signatures(texts: list[str], shingle_size: int, num_perm: int,
                       seed: int = 1) -> np.ndarray:
    """One MinHash signature (``num_perm`` hash values) per text, as an (n, num_perm) array."""
    from datasketch import MinHash

    dtype = MinHash(num_perm=num_perm, seed=seed).hashvalues.dtype
    signatures = np.empty((len(texts), num_perm), dtype=dtype)
    for row, text in enumerate(texts):
        minhash = MinHash(num_perm=num_perm, seed=seed)
        minhash.update_batch(list(shingles(text, shingle_size)))
        signatures[row] = minhash.hashvalues
    return signatures


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_clusters(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster rows whose estimated Jaccard similarity is ≥ ``threshold``.

    Returns for every row the index of its cluster's first row (its own index when alone).
    """
    from datasketch import MinHashLSH

    n, num_perm = signatures.shape
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    clusters = _UnionFind(n)
    for row in range(n):
        signature = _as_minhash(signatures[row])
        for candidate in lsh.query(signature):
            if np.mean(signatures[candidate] == signatures[row]) >= threshold:
                clusters.union(candidate, row)
        lsh.insert(row, signature, check_duplication=False)
    return np.array([clusters.find(i) for i in range(n)], dtype=np.int64)


def _as_minhash(values: np.ndarray) -> object:
    from datasketch import LeanMinHash, MinHash

    return LeanMinHash(seed=1, hashvalues=values, scheme=MinHash(num_perm=1).scheme)


def near_duplicates(keys: pd.DataFrame, signatures: np.ndarray, threshold: float) -> pd.DataFrame:
    """Rows of ``keys`` that near-duplicate an earlier row, with ``duplicate_of`` and ``cluster``.

    ``keys`` must be sorted in keep order: the first row of each cluster is kept.
    """
    if keys.empty:
        return keys.assign(duplicate_of=pd.Series(dtype=object), cluster=pd.Series(dtype=object))
    roots = near_duplicate_clusters(signatures, threshold)
    ids = keys["id"].to_numpy()
    repeated = roots != np.arange(len(keys))
    return keys.loc[repeated].assign(duplicate_of=ids[roots[repeated]],
                                     cluster=[f"near-{ids[r]}" for r in roots[repeated]])
