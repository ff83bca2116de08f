import random

import numpy as np

from finegate.core.minhash import (
    MinhashConfig,
    band_keys,
    estimated_jaccard,
    shingle_hashes,
    shingle_sets,
    signatures,
)
from finegate.core.near_dedup import (
    candidate_pairs,
    exact_verified_pairs,
    near_duplicate_clusters,
    verified_pairs,
)
from finegate.core.near_dedup import exact_jaccard as set_jaccard
from tests.factories import perturb, topic_rows

CONFIG = MinhashConfig(shingle_size=3, threshold=0.7)


def exact_jaccard(a: str, b: str, size: int = 3) -> float:
    """Jaccard of the word-shingle sets, computed exactly (the ground truth)."""
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = text.casefold().replace(".", "").split()
        return {tuple(words[i:i + size]) for i in range(len(words) - size + 1)}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def test_estimates_track_exact_jaccard() -> None:
    rng = random.Random(1)
    originals = [r["text"] * 3 for r in topic_rows(20, seed=5, prefix="e")]
    copies = [perturb(t, rng, share=rng.choice([0.02, 0.1, 0.3])) for t in originals]
    estimated = estimated_jaccard(signatures(originals, CONFIG), signatures(copies, CONFIG))
    exact = np.array([exact_jaccard(a, b) for a, b in zip(originals, copies, strict=True)])
    assert np.abs(estimated - exact).mean() < 0.06


def test_perturbed_copies_cluster_with_their_original() -> None:
    rng = random.Random(0)
    originals = [r["text"] * 3 for r in topic_rows(40, seed=9, prefix="o")]  # ~90 words each
    copies = [perturb(t, rng, share=0.02) for t in originals[:10]]
    roots = near_duplicate_clusters(signatures(originals + copies, CONFIG), CONFIG)
    assert roots[40:].tolist() == list(range(10))  # each copy joins its original
    assert roots[:40].tolist() == list(range(40))  # originals stay apart


def test_candidates_between_two_sets_and_verification() -> None:
    rng = random.Random(2)
    old = [r["text"] * 3 for r in topic_rows(30, seed=3, prefix="x")]
    new = [perturb(old[7], rng, 0.02), topic_rows(1, seed=99, prefix="y")[0]["text"] * 3]
    old_sig, new_sig = signatures(old, CONFIG), signatures(new, CONFIG)
    pairs = candidate_pairs(band_keys(new_sig, CONFIG), band_keys(old_sig, CONFIG))
    verified = verified_pairs(new_sig, old_sig, pairs, CONFIG.threshold)
    assert verified.tolist() == [[0, 7]]


def test_no_near_duplicates_and_empty_input() -> None:
    texts = [r["text"] for r in topic_rows(20, seed=3, prefix="x")]
    roots = near_duplicate_clusters(signatures(texts, CONFIG), CONFIG)
    assert roots.tolist() == list(range(20))
    empty = np.empty((0, CONFIG.num_perm), dtype=np.uint32)
    assert len(near_duplicate_clusters(empty, CONFIG)) == 0
    assert candidate_pairs(band_keys(empty, CONFIG)).shape == (0, 2)


def overlapping_pair(seed: int, shift: int, n: int = 101) -> tuple[str, str]:
    """Two texts of ``n`` distinct words, the second shifted ``shift`` words on: they share
    ``n - 1 - shift`` of their ``n - 1`` word bigrams each (exact Jaccard known in closed form)."""
    stems = ["match", "chip", "vote", "cloud", "law"]
    words = [f"{stems[k % 5]}{seed}x{k}" for k in range(n + shift)]
    return " ".join(words[:n]), " ".join(words[shift:shift + n])


def bigram_jaccard(a: str, b: str) -> float:
    """Exact Jaccard of the word-bigram sets, in plain Python (the ground truth)."""
    def bigrams(text: str) -> set[tuple[str, str]]:
        words = text.casefold().split()
        return set(zip(words, words[1:], strict=False))

    x, y = bigrams(a), bigrams(b)
    return len(x & y) / len(x | y)


def test_exact_verification_finds_what_the_estimate_misses_and_no_more() -> None:
    config = MinhashConfig(shingle_size=2, threshold=0.5)
    above, below = overlapping_pair(0, 33), overlapping_pair(4, 34)  # seeds: estimate is wrong
    texts = [*above, *below]
    pairs = np.array([[0, 1], [2, 3]])
    truth = [bigram_jaccard(*above), bigram_jaccard(*below)]
    assert truth == [67 / 133, 66 / 134]  # 0.504 just above the threshold, 0.493 just below
    sig = signatures(texts, config)
    estimate = estimated_jaccard(sig[pairs[:, 0]], sig[pairs[:, 1]])
    assert estimate[0] < 0.5 <= estimate[1]  # the estimate gets both wrong
    assert verified_pairs(sig, sig, pairs, 0.5).tolist() == [[2, 3]]
    sets = shingle_sets(texts, 2)
    assert np.allclose(set_jaccard(sets, sets, pairs), truth)
    assert exact_verified_pairs(sets, sets, pairs, 0.5).tolist() == [[0, 1]]
    roots = near_duplicate_clusters(sig, config, sets)
    assert roots.tolist() == [0, 0, 2, 3]


def test_shingle_sets_match_shingle_hashes_and_empty_texts() -> None:
    texts = ["One two three", "", "!!", "Solo", "two THREE one two"]
    flat, offsets = shingle_sets(texts, 2)
    for i, text in enumerate(texts):
        assert np.array_equal(flat[offsets[i]:offsets[i + 1]], shingle_hashes(text, 2))
    # texts without words: both empty, similarity 1.0 (as their MinHash estimate); vs words 0.0
    assert set_jaccard((flat, offsets), (flat, offsets),
                       np.array([[1, 2], [1, 3], [0, 4]])).tolist() == [1.0, 0.0, 2 / 3]
