import random

import numpy as np
import pandas as pd

from finegate.core.near_dedup import minhash_signatures, near_duplicates, shingles
from tests.factories import perturb, topic_rows


def test_shingles_ignore_case_and_punctuation() -> None:
    assert shingles("The cat, the HAT.", 2) == {b"the cat", b"cat the", b"the hat"}
    assert shingles("short", 3) == {b"short"}


def test_perturbed_copies_cluster_with_their_original() -> None:
    rng = random.Random(0)
    originals = [r["text"] * 3 for r in topic_rows(40, seed=9, prefix="o")]  # ~90 words each
    copies = [perturb(t, rng, share=0.02) for t in originals[:10]]
    texts = originals + copies
    keys = pd.DataFrame({"id": [f"r{i:03d}" for i in range(len(texts))]})
    signatures = minhash_signatures(texts, shingle_size=3, num_perm=128)
    found = near_duplicates(keys, signatures, threshold=0.7)
    assert sorted(found["id"]) == [f"r{i:03d}" for i in range(40, 50)]
    assert found["duplicate_of"].tolist() == [f"r{i:03d}" for i in range(10)]
    assert found["cluster"].str.startswith("near-").all()


def test_no_near_duplicates_and_empty_input() -> None:
    texts = [r["text"] for r in topic_rows(20, seed=3, prefix="x")]
    keys = pd.DataFrame({"id": [str(i) for i in range(20)]})
    assert near_duplicates(keys, minhash_signatures(texts, 3, 64), 0.8).empty
    empty = pd.DataFrame({"id": pd.Series(dtype=object)})
    assert near_duplicates(empty, np.empty((0, 64), dtype=np.uint32), 0.8).empty
