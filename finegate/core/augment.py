"""Augmentation for rare classes: minority upsampling, EDA-style text perturbation, mixup draws.

Pure functions over texts and labels, seeded: the same seed gives the same rows. The training
stage (``tasks/finetune.py``) applies them to its train split in memory; nothing here reads or
writes the lake, so validation, test, golden data and the curated snapshot never see an
augmented row.

Perturbation follows EDA (Wei & Zou, 2019): synonym replacement, random insertion (a synonym of
a word of the text), random swap and random deletion, each changing about ``rate`` of the words.
Synonyms come from ``synonyms.json`` next to this module (a small curated list of news
vocabulary, shipped with the package: no download).
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from finegate.core.config import AugmentConfig

SYNONYMS_FILE = Path(__file__).with_name("synonyms.json")
_PUNCTUATION = ".,;:!?\"'()[]"


@cache
def synonyms() -> dict[str, tuple[str, ...]]:
    """The shipped word list: lower-case word -> its synonyms."""
    table = json.loads(SYNONYMS_FILE.read_text(encoding="utf-8"))
    return {word: tuple(others) for word, others in table.items()}


def _split_word(token: str) -> tuple[str, str, str]:
    """Leading punctuation, the word, trailing punctuation."""
    core = token.strip(_PUNCTUATION)
    if not core:
        return token, "", ""
    start = token.index(core)
    return token[:start], core, token[start + len(core):]


def _synonym(token: str, rng: random.Random, table: dict[str, tuple[str, ...]]) -> str | None:
    """A synonym of ``token`` with its punctuation and capitalisation, or None."""
    before, core, after = _split_word(token)
    choices = table.get(core.lower())
    if not choices:
        return None
    word = rng.choice(choices)
    if core[:1].isupper():
        word = word[:1].upper() + word[1:]
    return before + word + after


def synonym_replacement(words: list[str], n: int, rng: random.Random,
                        table: dict[str, tuple[str, ...]]) -> list[str]:
    """``n`` distinct words that have a synonym replaced by one."""
    words = list(words)
    candidates = [i for i, w in enumerate(words) if _split_word(w)[1].lower() in table]
    for i in rng.sample(candidates, min(n, len(candidates))):
        words[i] = _synonym(words[i], rng, table) or words[i]
    return words


def random_insertion(words: list[str], n: int, rng: random.Random,
                     table: dict[str, tuple[str, ...]]) -> list[str]:
    """``n`` synonyms of words of the text inserted at random places."""
    words = list(words)
    candidates = [w for w in words if _split_word(w)[1].lower() in table]
    for _ in range(n if candidates else 0):
        _, core, _ = _split_word(rng.choice(candidates))
        words.insert(rng.randrange(len(words) + 1), rng.choice(table[core.lower()]))
    return words


def random_swap(words: list[str], n: int, rng: random.Random,
                table: dict[str, tuple[str, ...]]) -> list[str]:
    """``n`` swaps of two words at random positions."""
    words = list(words)
    for _ in range(n if len(words) > 1 else 0):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def random_deletion(words: list[str], n: int, rng: random.Random,
                    table: dict[str, tuple[str, ...]]) -> list[str]:
    """``n`` words deleted at random (at least one word is kept)."""
    if len(words) < 2:
        return list(words)
    dropped = set(rng.sample(range(len(words)), min(n, len(words) - 1)))
    return [w for i, w in enumerate(words) if i not in dropped]


Operation = Callable[[list[str], int, random.Random, dict[str, tuple[str, ...]]], list[str]]
OPERATIONS: dict[str, Operation] = {
    "synonym": synonym_replacement, "insert": random_insertion, "swap": random_swap,
    "delete": random_deletion,
}


def perturb_text(text: str, rng: random.Random, rate: float = 0.1,
                 table: dict[str, tuple[str, ...]] | None = None) -> str:
    """``text`` changed by one EDA operation drawn at random, touching ~``rate`` of its words
    (at least one); when that operation cannot change it (no word with a synonym), the next
    one in a random order does. A one-word text comes back unchanged."""
    table = synonyms() if table is None else table
    words = text.split()
    n = max(1, round(rate * len(words)))
    names = list(OPERATIONS)
    rng.shuffle(names)
    for name in names:
        changed = OPERATIONS[name](words, n, rng, table)
        if changed != words:
            return " ".join(changed)
    return text


def upsample_indices(labels: list[str], target_share: float, rng: random.Random) -> list[int]:
    """Rows to copy so that every class has at least ``target_share`` × the largest class's rows.

    A class's rows are copied in whole rounds, then a random sample of them for the rest, so
    copies are spread evenly over its rows. Returns row indices (a row may repeat), grouped by
    class in sorted label order.
    """
    if not labels or target_share <= 0:
        return []
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    target = math.ceil(target_share * max(len(rows) for rows in by_class.values()))
    extra: list[int] = []
    for label in sorted(by_class):
        rows = by_class[label]
        rounds, rest = divmod(max(0, target - len(rows)), len(rows))
        extra += rows * rounds + sorted(rng.sample(rows, rest))
    return extra


@dataclass(frozen=True)
class AugmentedRows:
    """The train rows with the augmented rows after them."""

    texts: list[str]
    labels: list[str]
    added: int  # augmented rows (the last ``added`` of ``texts``)


def augment_train_rows(texts: list[str], labels: list[str], settings: AugmentConfig,
                       seed: int) -> AugmentedRows:
    """The train rows plus minority copies (perturbed when ``settings.perturb``); the same for
    the same seed. Call it on the train split only."""
    rng = random.Random(f"augment:{seed}")
    extra = upsample_indices(labels, settings.upsample_to, rng)
    copies = [texts[i] for i in extra]
    if settings.perturb:
        table = synonyms()
        copies = [perturb_text(t, rng, settings.perturb_rate, table) for t in copies]
    return AugmentedRows([*texts, *copies], [*labels, *(labels[i] for i in extra)], len(extra))


def mixup_draw(seed: int, step: int, batch_size: int, alpha: float) -> tuple[float, list[int]]:
    """Mixup's lambda ~ Beta(alpha, alpha) and the partner of every row in the batch, fixed by
    ``(seed, step)``: a resumed run draws what the uninterrupted one drew."""
    rng = random.Random(f"mixup:{seed}:{step}")
    lam = rng.betavariate(alpha, alpha)
    partners = list(range(batch_size))
    rng.shuffle(partners)
    return lam, partners
