"""Label-noise generators: the kinds of wrong labels real annotation produces.

Each generator takes rows (``id``, ``text``, ``label``) and returns a copy with the noisy
``label``, the original ``true_label`` and ``is_noisy`` (``label != true_label``): the
generator's own record of what it changed is the ground truth an experiment scores against,
never a detector's verdict. All are reproducible from their seed.

- ``symmetric``: each row, with probability ``rate``, gets a uniformly drawn other label.
- ``asymmetric`` (class-conditional): rows of a class get its *confusable* class with
  probability ``rate`` (default BBC pairs business→tech, tech→business, politics→business);
  other classes stay clean, so the noise is concentrated and systematic between neighbours.
- ``annotator``: several annotators split the rows round-robin; one of them is careless (a
  random label with probability ``rate``), the others err at ``CAREFUL_ERROR``. A share of the
  rows (``overlap``) is labelled by every annotator: those rows carry the votes
  (``annotator_labels``, ``annotator_ids``) while ``label`` stays the assigned annotator's vote.
- ``keyword``: a labelling rule (``word → class``, e.g. "market" → business) is applied with
  probability ``rate`` to every row whose text contains the word: rows of other classes that
  mention it get the rule's class. The flipped share depends on how often the words occur.
- ``conflicting_duplicates``: label-dependent near-duplicates; for rows of a class that has a
  confusable class, with probability ``rate`` a near-copy (a few words dropped) is added with
  the confusable label. The originals stay correct; the copies are the noisy rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

# Neighbouring BBC classes (label → the label annotators confuse it with).
BBC_CONFUSIONS = {"business": "tech", "tech": "business", "politics": "business"}
# A keyword labelling rule per BBC class: plausible for a heuristic labeller, wrong whenever
# another class's article mentions the word.
BBC_KEYWORDS = {"market": "business", "online": "tech", "government": "politics",
                "film": "entertainment", "win": "sports"}
CAREFUL_ERROR = 0.02  # error rate of the careful annotators in ``annotator``


def _start(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.reset_index(drop=True).copy()
    out["true_label"] = out["label"]
    return out


def _finish(out: pd.DataFrame) -> pd.DataFrame:
    out["is_noisy"] = (out["label"] != out["true_label"]).to_numpy()
    return out


def _other(label: str, labels: list[str], rng: np.random.Generator) -> str:
    others = [lab for lab in labels if lab != label]
    return others[int(rng.integers(len(others)))]


def symmetric(rows: pd.DataFrame, rate: float, labels: list[str], seed: int = 0,
              **_: Any) -> pd.DataFrame:
    """Each row's label, with probability ``rate``, becomes a uniformly drawn other label."""
    out, rng = _start(rows), np.random.default_rng(seed)
    flip = rng.random(len(out)) < rate
    out.loc[flip, "label"] = [_other(lab, labels, rng) for lab in out.loc[flip, "label"]]
    return _finish(out)


def default_confusions(labels: list[str]) -> dict[str, str]:
    """The BBC pairs among ``labels``; else each label confused with the next one."""
    pairs = {a: b for a, b in BBC_CONFUSIONS.items() if a in labels and b in labels}
    return pairs or {a: labels[(i + 1) % len(labels)] for i, a in enumerate(labels[:2])}


def asymmetric(rows: pd.DataFrame, rate: float, labels: list[str], seed: int = 0,
               confusions: dict[str, str] | None = None, **_: Any) -> pd.DataFrame:
    """Rows of a class in ``confusions`` get the confusable class with probability ``rate``."""
    confusions = confusions or default_confusions(labels)
    out, rng = _start(rows), np.random.default_rng(seed)
    draw = rng.random(len(out))
    flip = out["label"].isin(list(confusions)).to_numpy() & (draw < rate)
    out.loc[flip, "label"] = out.loc[flip, "label"].map(confusions)
    return _finish(out)


def annotator(rows: pd.DataFrame, rate: float, labels: list[str], seed: int = 0,
              annotators: int = 3, overlap: float = 0.3, **_: Any) -> pd.DataFrame:
    """One careless annotator (error ``rate``) among ``annotators``; ``overlap`` of the rows
    carry every annotator's vote. The careless one is ``a0``."""
    out, rng = _start(rows), np.random.default_rng(seed)
    ids = [f"a{n}" for n in range(annotators)]
    error = np.array([rate] + [CAREFUL_ERROR] * (annotators - 1))

    def vote(truth: str, who: int) -> str:
        return _other(truth, labels, rng) if rng.random() < error[who] else truth

    assigned = np.arange(len(out)) % annotators
    rng.shuffle(assigned)
    shared = rng.random(len(out)) < overlap
    delivered, votes, voters = [], [], []
    for truth, who, everyone in zip(out["true_label"], assigned, shared, strict=True):
        if everyone:
            ballot = [vote(truth, n) for n in range(annotators)]
            delivered.append(ballot[who])
            votes.append(ballot)
            voters.append(list(ids))
        else:
            delivered.append(vote(truth, int(who)))
            votes.append(None)
            voters.append(None)
    out["label"] = delivered
    out["annotator_labels"] = votes
    out["annotator_ids"] = voters
    out["assigned_annotator"] = [ids[w] for w in assigned]
    return _finish(out)


def default_keywords(labels: list[str]) -> dict[str, str]:
    """The BBC keyword rules whose class is among ``labels``."""
    return {word: label for word, label in BBC_KEYWORDS.items() if label in labels}


def keyword(rows: pd.DataFrame, rate: float, labels: list[str], seed: int = 0,
            keywords: dict[str, str] | None = None, **_: Any) -> pd.DataFrame:
    """Rows mentioning a rule's word get the rule's class with probability ``rate`` (the first
    matching rule in ``keywords`` order wins)."""
    keywords = keywords or default_keywords(labels)
    out, rng = _start(rows), np.random.default_rng(seed)
    draw = rng.random(len(out))
    lowered = out["text"].str.lower()
    target = pd.Series([None] * len(out), dtype=object)
    for word, label in reversed(list(keywords.items())):  # reversed: the first rule wins
        target[lowered.str.contains(rf"\b{re.escape(word)}\b", regex=True).to_numpy()] = label
    flip = target.notna().to_numpy() & (draw < rate)
    out.loc[flip, "label"] = target[flip].to_numpy()
    return _finish(out)


def near_copy(text: str, rng: np.random.Generator, drop: float = 0.05) -> str:
    """``text`` with about ``drop`` of its words removed (at least one word kept)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= drop] or words[:1]
    return " ".join(kept)


def conflicting_duplicates(rows: pd.DataFrame, rate: float, labels: list[str], seed: int = 0,
                           confusions: dict[str, str] | None = None,
                           **_: Any) -> pd.DataFrame:
    """Add, for rows of a class in ``confusions`` with probability ``rate``, a near-copy with
    the confusable label (id ``<id>~dup``). The originals keep their correct labels."""
    confusions = confusions or default_confusions(labels)
    out, rng = _start(rows), np.random.default_rng(seed)
    draw = rng.random(len(out))
    source = out.loc[out["label"].isin(list(confusions)).to_numpy() & (draw < rate)]
    copies = source.assign(
        id=source["id"].astype(str) + "~dup",
        text=[near_copy(t, rng) for t in source["text"]],
        label=source["true_label"].map(confusions))
    return _finish(pd.concat([out, copies], ignore_index=True))


GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "symmetric": symmetric, "asymmetric": asymmetric, "annotator": annotator,
    "keyword": keyword, "conflicting_duplicates": conflicting_duplicates,
}


def add_noise(kind: str, rows: pd.DataFrame, rate: float, labels: list[str], seed: int = 0,
              **options: Any) -> pd.DataFrame:
    """Rows with noise of ``kind`` (a key of ``GENERATORS``) at ``rate``; see the module doc."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {sorted(GENERATORS)}")
    if not 0 <= rate <= 1:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    return GENERATORS[kind](rows, rate, labels, seed, **options)
