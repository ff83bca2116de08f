"""Benchmark of the data-quality engine on BBC News with known, injected defects.

Measures, in one run:
1. near-duplicate precision/recall on perturbed copies of articles (word deletions and
   substitutions, a dropped sentence, case and whitespace changes), and label-case variants;
2. (throughput moved to ``benchmarks/minhash_engines.py``: datasketch used well, rensa and
   Finegate's NumPy MinHash on the same shingles, one core each);
3. label-noise detection precision/recall at 10/20/40% symmetric noise, for two probability
   models (TF-IDF + logistic regression, MiniLM sentence embeddings + logistic regression);
4. macro-F1 on a clean held-out set of a classifier trained after each policy
   (none / flag / drop / relabel). The classifier is TF-IDF + logistic regression, a cheap proxy
   for fine-tuning that fits a CPU benchmark.

Run: ``.venv/bin/python benchmarks/quality_engine.py [--out BENCHMARKS-quality.json]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from minhash_engines import edit_words  # benchmarks/ is on sys.path when run as a script

from finegate.core.config import DedupConfig, LabelsConfig
from finegate.core.minhash import MinhashConfig, shingle_sets, signatures
from finegate.core.near_dedup import near_duplicate_clusters
from finegate.core.text import normalise_text, text_hash
from finegate.demo import corpus_root, read_article
from finegate.tasks.labels import choose_actions, label_issues

LABELS = ["business", "entertainment", "politics", "sports", "tech"]
THRESHOLD, SHINGLE, PERMS = DedupConfig().threshold, DedupConfig().shingle_size, 128
GRID = [(s, t) for s in (1, 2, 3) for t in (0.5, 0.6, 0.7, 0.8)]


def load_bbc() -> pd.DataFrame:
    """BBC News articles, cleaned, exact and near duplicates removed (a clean base set)."""
    rows = []
    for path in sorted(corpus_root().glob("*/*.txt")):
        rows.append({"id": f"{path.parent.name}-{path.stem}",
                     "text": normalise_text(read_article(path)),
                     "label": path.parent.name})
    frame = pd.DataFrame(rows)
    frame = frame.loc[~frame["text"].map(text_hash).duplicated()].reset_index(drop=True)
    # Remove the corpus's own near-duplicates (at a looser threshold) so that every near
    # duplicate in the benchmark set is one we planted.
    own = near_duplicates(frame, SHINGLE, 0.4)
    return frame.loc[~frame["id"].isin(own["id"])].reset_index(drop=True)


def near_duplicates(data: pd.DataFrame, shingle_size: int, threshold: float,
                    exact: bool = False) -> pd.DataFrame:
    """Rows of ``data`` that near-duplicate an earlier row, with ``duplicate_of``; candidates
    verified on the MinHash estimate, or (``exact``) on the exact Jaccard of shingle sets."""
    config = MinhashConfig(shingle_size=shingle_size, num_perm=PERMS, threshold=threshold)
    texts = data["text"].tolist()
    roots = near_duplicate_clusters(signatures(texts, config), config,
                                    shingle_sets(texts, shingle_size) if exact else None)
    repeated = roots != np.arange(len(data))
    ids = data["id"].to_numpy()
    return pd.DataFrame({"id": ids[repeated], "duplicate_of": ids[roots[repeated]]})


def shingles(text: str, size: int) -> set[str]:
    """Word shingles, computed exactly (the ground truth's Jaccard, never estimated)."""
    words = re.findall(r"\w+", text.casefold())
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def perturb(text: str, rng: random.Random) -> str:
    """A near-duplicate: ~3% words deleted, ~3% replaced, last sentence dropped, case/spaces."""
    sentences = re.split(r"(?<=\.) ", text)
    if len(sentences) > 4:
        sentences = sentences[:-1]
    words = " ".join(sentences).split()
    out = []
    for word in words:
        roll = rng.random()
        if roll < 0.03:
            continue
        out.append(rng.choice(["the", "new", "said", "report"]) if roll < 0.06 else word)
    text = "  ".join(out)
    return text.upper() if rng.random() < 0.3 else text


def near_dup_quality(base: pd.DataFrame, copies: int, seed: int) -> dict:
    rng = random.Random(seed)
    originals = base.sample(copies, random_state=seed)
    planted = pd.DataFrame({"id": [f"copy-{i}" for i in originals["id"]],
                            "text": [perturb(t, rng) for t in originals["text"]],
                            "label": [f" {lab.upper()} " for lab in originals["label"]]})
    data = pd.concat([base, planted], ignore_index=True)
    truth = {f"copy-{i}": i for i in originals["id"]}
    grid = []
    for shingle_size, threshold in GRID:
        for verify in ("estimate", "exact"):
            found = near_duplicates(data, shingle_size, threshold, exact=verify == "exact")
            correct = sum(truth.get(r) == d for r, d in zip(found["id"], found["duplicate_of"],
                                                            strict=True))
            grid.append({"shingle_size": shingle_size, "threshold": threshold, "verify": verify,
                         "logged": len(found), "correct": correct,
                         "precision": correct / max(len(found), 1), "recall": correct / copies})
    default = next(g for g in grid if (g["shingle_size"], g["threshold"], g["verify"])
                   == (SHINGLE, THRESHOLD, "exact"))
    jaccards = [len(shingles(a, SHINGLE) & shingles(b, SHINGLE))
                / len(shingles(a, SHINGLE) | shingles(b, SHINGLE))
                for a, b in zip(originals["text"], planted["text"], strict=True)]
    from finegate.core.config import Config
    from finegate.core.text import label_key, label_lookup

    lookup = label_lookup(Config().label_set)
    variants_mapped = sum(lookup.get(label_key(v)) is not None for v in planted["label"])
    return {"base_rows": len(base), "planted_copies": copies, "num_perm": PERMS,
            "true_jaccard_of_copies": {"min": min(jaccards), "median": float(np.median(jaccards))},
            **default, "grid": grid,
            "label_case_variants_canonicalised": variants_mapped / copies}


def exact_pairs(texts: list[str], size: int, floor: float) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair ``(i < j)`` with Jaccard >= ``floor``: Python shingle sets
    (strings, not Finegate's hashes) and a sparse product over all pairs."""
    from scipy import sparse

    vocabulary: dict[str, int] = {}
    sets = [shingles(t, size) if re.search(r"\w", t) else set() for t in texts]
    columns = [vocabulary.setdefault(s, len(vocabulary)) for one in sets for s in one]
    sizes = np.array([len(one) for one in sets], dtype=np.int64)
    matrix = sparse.csr_matrix((np.ones(len(columns), np.int32), np.array(columns, np.int64),
                                np.concatenate(([0], np.cumsum(sizes)))),
                               shape=(len(sets), max(len(vocabulary), 1)))
    shared = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    jaccard = shared.data / np.maximum(sizes[shared.row] + sizes[shared.col] - shared.data, 1)
    keep = jaccard >= floor
    return {(int(i), int(j)): float(v) for i, j, v in
            zip(shared.row[keep], shared.col[keep], jaccard[keep], strict=True)}


def cross_night(base: pd.DataFrame, nights: int, copies: int, seed: int) -> dict:
    """Copies arriving many drops after their originals, through the dedup stage itself.

    ``base`` is split into ``nights - 1`` drops; the last drop holds ``copies`` edited copies
    (``edit_words`` at 5/10/20/30% per word, from benchmarks/minhash_engines.py's scheme) of
    articles of the FIRST drop, plus fresh held-out articles. Ingest and clean run once; the
    dedup stage then runs night by night twice: candidates verified on the MinHash estimate
    (before) and on the exact Jaccard (now). Ground truth: a last-drop row is a near duplicate
    when its exact bigram Jaccard with some earlier row (earlier drop, or earlier in its own
    drop) is >= 0.5. Precision: logged near duplicates of the last drop that are true; recall:
    true ones logged (as near or exact duplicates)."""
    import shutil
    import tempfile

    import pyarrow.parquet as pq

    import finegate.tasks.dedup as dedup_stage
    from finegate.core.config import Config
    from finegate.core.lake import Lake
    from finegate.tasks.clean import clean_drop
    from finegate.tasks.ingest import ingest_drop

    rng = random.Random(seed)
    shuffled = base.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    fresh = shuffled.iloc[:copies // 2]
    history = shuffled.iloc[copies // 2:].reset_index(drop=True)
    drops = np.array_split(np.arange(len(history)), nights - 1)
    vocabulary = sorted({w for t in base["text"][::10] for w in t.split() if w.isalpha()})
    rates = (0.05, 0.10, 0.20, 0.30)
    originals = history.iloc[drops[0]].sample(copies, random_state=seed)
    planted = [{"id": f"copy-{r}-{i}",
                "text": edit_words(t, rates[k % len(rates)], vocabulary, rng),
                "label": lab} for k, (i, t, lab, r) in enumerate(zip(
                    originals["id"], originals["text"], originals["label"],
                    [rates[k % len(rates)] for k in range(copies)], strict=True))]
    last = pd.concat([pd.DataFrame(planted), fresh], ignore_index=True)
    frames = [history.iloc[d] for d in drops] + [last]
    names = [f"night{n + 1:03d}" for n in range(nights)]
    work = Path(tempfile.mkdtemp(prefix="finegate-crossnight-"))
    lake, label_set = Lake.at(work / "lake"), Config().label_set
    try:
        for name, frame in zip(names, frames, strict=True):
            (work / "landing" / name).mkdir(parents=True)
            frame[["id", "text", "label"]].to_json(work / "landing" / name / "rows.jsonl",
                                                   orient="records", lines=True)
            ingest_drop(work / "landing", name, lake)
            clean_drop(name, lake, label_set)
        silver = pd.concat([pq.read_table(lake.silver(n)).to_pandas()[["id", "drop", "text"]]
                            for n in names], ignore_index=True)
        pairs = exact_pairs(silver["text"].tolist(), SHINGLE, THRESHOLD)
        in_last = (silver["drop"] == names[-1]).to_numpy()
        truth = {silver["id"].iloc[j] for i, j in pairs if in_last[j]}
        exact_copy = {silver["id"].iloc[j] for i, j in pairs if in_last[j] and pairs[(i, j)] == 1.0}
        results = {}
        for verify in ("estimate", "exact"):
            shutil.rmtree(lake.dedup_index, ignore_errors=True)
            shutil.rmtree(lake.dedup, ignore_errors=True)
            original = dedup_stage.read_shingle_sets
            if verify == "estimate":  # no texts found: decide() verifies on the estimate
                dedup_stage.read_shingle_sets = lambda _lake, keys, _size: (
                    (np.empty(0, np.uint64), np.zeros(len(keys) + 1, np.int64)),
                    np.zeros(len(keys), bool))
            try:
                for n in range(1, nights):
                    dedup_stage.dedup_drops(lake, names[:n], Config().dedup)
                started = time.perf_counter()
                result = dedup_stage.dedup_drops(lake, names, Config().dedup)
                seconds = time.perf_counter() - started
            finally:
                dedup_stage.read_shingle_sets = original
            log = pq.read_table(result.duplicates_path).to_pandas()
            log = log.loc[log["drop"] == names[-1]]
            near = set(log.loc[log["cluster"].str.startswith("near-"), "id"])
            logged = set(log["id"])
            hits = len(near & truth)
            per_rate = {f"{round(r * 100)}%": sum(p["id"] in logged for p in planted
                                                   if p["id"].startswith(f"copy-{r}-"))
                        / sum(p["id"].startswith(f"copy-{r}-") for p in planted) for r in rates}
            results[verify] = {"near_logged": len(near), "precision": hits / max(len(near), 1),
                               "recall": len(truth & logged) / max(len(truth), 1),
                               "planted_logged_by_edit_rate": per_rate,
                               "last_night_dedup_seconds": seconds}
        return {"nights": nights, "rows_before_last_night": len(history),
                "last_night_rows": len(last), "planted_copies_of_night1": copies,
                "true_near_duplicates_in_last_night": len(truth),
                "of_which_exact_copies": len(exact_copy), **results}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stable_fraction(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8


def embed(texts: list[str]) -> np.ndarray:
    """Mean-pooled MiniLM-L6 sentence embeddings (128 tokens), on CPU."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from finegate.core.config import demo_model_path

    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    model = AutoModel.from_pretrained(demo_model_path()).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            batch = tokenizer(texts[i:i + 64], truncation=True, max_length=128, padding=True,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def embedding_issues(vectors: np.ndarray, labels: list[str]) -> np.ndarray:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    given = np.array([LABELS.index(lab) for lab in labels])
    probabilities = cross_val_predict(LogisticRegression(C=1.0, max_iter=2000), vectors, given,
                                      cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                      method="predict_proba")
    return find_label_issues(given, probabilities)


def train_and_score(train: pd.DataFrame, test: pd.DataFrame) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2),
                          LogisticRegression(C=10.0, max_iter=2000))
    model.fit(train["text"], train["label"])
    return float(f1_score(test["label"], model.predict(test["text"]), average="macro"))


def noise_and_policies(base: pd.DataFrame, rates: list[float], seed: int) -> list[dict]:
    held_out = base["id"].map(stable_fraction) < 0.2
    test, train = base.loc[held_out], base.loc[~held_out].reset_index(drop=True)
    started = time.perf_counter()
    vectors = embed(train["text"].tolist())
    embed_seconds = time.perf_counter() - started
    results = []
    for rate in rates:
        rng = np.random.default_rng(seed)
        flip = rng.random(len(train)) < rate
        noisy = train.copy()
        noisy.loc[flip, "label"] = [
            LABELS[(LABELS.index(lab) + rng.integers(1, len(LABELS))) % len(LABELS)]
            for lab in train.loc[flip, "label"]]
        started = time.perf_counter()
        issues, _ = label_issues(noisy["text"].tolist(), noisy["label"].tolist(), LABELS, 5)
        tfidf_seconds = time.perf_counter() - started
        found = issues["is_label_issue"].to_numpy()
        by_embedding = embedding_issues(vectors, noisy["label"].tolist())
        row = {"noise_rate": rate, "flipped": int(flip.sum()),
               "tfidf": _precision_recall(found, flip) | {"seconds": tfidf_seconds},
               "embeddings": _precision_recall(by_embedding, flip)
               | {"seconds_incl_embedding": embed_seconds}}
        scores = {"no_cleaning": train_and_score(noisy, test)}
        for policy in ("flag", "drop", "relabel"):
            actions = np.array(choose_actions(issues, noisy["label"].tolist(),
                                              LabelsConfig(policy=policy)))
            cleaned = noisy.loc[actions != "drop"].copy()
            relabel = actions[actions != "drop"] == "relabel"
            cleaned.loc[relabel, "label"] = issues.loc[actions != "drop", "suggested_label"][
                relabel].to_numpy()
            scores[policy] = train_and_score(cleaned, test)
        scores["oracle_clean_labels"] = train_and_score(train, test)
        row["macro_f1_on_clean_test"] = scores
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
    return results


def _precision_recall(found: np.ndarray, truth: np.ndarray) -> dict:
    hits = int((found & truth).sum())
    return {"flagged": int(found.sum()), "precision": hits / max(int(found.sum()), 1),
            "recall": hits / max(int(truth.sum()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/quality_engine.json")
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--nights", type=int, default=8, help="drops in the cross-night test")
    parser.add_argument("--cross-night-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--near-only", action="store_true",
                        help="only the near-duplicate part (keeps the other results in --out)")
    args = parser.parse_args()
    base = load_bbc()
    report = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores, {platform.python_version()}",
              "near_duplicates": near_dup_quality(base, args.copies, seed=1),
              "cross_night": [cross_night(base, args.nights, args.copies // 3, seed)
                              for seed in args.cross_night_seeds]}
    print(json.dumps(report, indent=1), flush=True)
    if args.near_only and Path(args.out).is_file():
        report = {**json.loads(Path(args.out).read_text()), **report}
        report.pop("throughput", None)  # superseded by benchmarks/minhash_engines.py
    else:
        report["label_noise"] = noise_and_policies(base, [0.1, 0.2, 0.4], seed=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
