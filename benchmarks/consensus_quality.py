"""CROWDLAB (cleanlab.multiannotator) against majority vote: consensus accuracy on BBC News.

Simulated annotators answer with the true BBC label: two careful ones (right 90% of the time)
and a sloppy one (right 40%, else a random other label); each article is labelled by two of
the three, drawn at random (so ties happen, as in real queues with two votes per task).
Both methods see the same votes; CROWDLAB also gets out-of-fold probabilities of the label
review's own model (TF-IDF + logistic regression, 5 folds, fitted on the majority-vote labels,
never on the truth). Ground truth is BBC's label, not made by either method.

    PYTHONPATH=. python benchmarks/consensus_quality.py --rows 1000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from finegate.core.consensus import crowd_consensus
from finegate.demo import corpus_root
from finegate.tasks.labels import label_codes, out_of_fold_probabilities

ANNOTATORS = {"careful1": 0.9, "careful2": 0.9, "sloppy": 0.4}


def bbc(rows: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    paths = sorted(p for p in corpus_root().glob("*/*.txt"))
    random.Random(seed).shuffle(paths)
    paths = paths[:rows]
    labels = sorted({p.parent.name for p in paths})
    texts = [p.read_bytes().decode("utf-8", errors="replace") for p in paths]
    return texts, [p.parent.name for p in paths], labels


def simulate(truth: list[str], labels: list[str], seed: int):
    rng = random.Random(seed)
    votes, voters = [], []
    for t in truth:
        pair = rng.sample(sorted(ANNOTATORS), 2)
        votes.append([t if rng.random() < ANNOTATORS[a] else rng.choice(
            [x for x in labels if x != t]) for a in pair])
        voters.append(pair)
    return votes, voters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results = {"majority": [], "crowdlab": []}
    for seed in args.seeds:
        texts, truth, labels = bbc(args.rows, seed)
        votes, voters = simulate(truth, labels, seed)
        majority = crowd_consensus(votes, voters, labels, None)
        start = time.perf_counter()
        probabilities = out_of_fold_probabilities(
            texts, label_codes(majority.rows["label"].tolist(), labels), len(labels), 5)
        crowd = crowd_consensus(votes, voters, labels, probabilities)
        seconds = time.perf_counter() - start
        for name, result in (("majority", majority), ("crowdlab", crowd)):
            accuracy = float(np.mean(result.rows["label"].to_numpy() == np.array(truth)))
            results[name].append(accuracy)
        quality = {k: round(v, 3) for k, v in crowd.annotator_quality.items()}
        print(f"seed {seed}: majority {results['majority'][-1]:.3f}  crowdlab "
              f"{results['crowdlab'][-1]:.3f}  ({seconds:.1f} s incl. 5-fold model)  "
              f"annotator quality {quality}")
    for name, values in results.items():
        print(f"{name}: mean {statistics.mean(values):.3f}, min {min(values):.3f}, "
              f"max {max(values):.3f} over seeds {args.seeds}")


if __name__ == "__main__":
    main()
