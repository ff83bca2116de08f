import random

import numpy as np

from finegate.core.minhash import MinhashConfig, band_keys, estimated_jaccard, signatures
from finegate.core.near_dedup import candidate_pairs, near_duplicate_clusters, verified_pairs
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
