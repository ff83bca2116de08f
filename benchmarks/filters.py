"""Benchmark of the heuristic filters (``finegate.core.filters``) with their default thresholds.

Measures, in one run:
1. loss on clean data: every BBC News article (all 2,225 files, as landed: lines kept), how many
   each filter would drop on its own, and the default chain (first drop wins) as the clean
   stage runs it. Target: < 0.5% per filter;
2. precision/recall per filter on a planted-junk variant: the BBC rows plus generated junk of
   nine kinds (too short, long "words", symbol pages, table dumps, repeated lines, repeated
   phrases, ellipsis teaser lists, bullet menus, non-English paragraphs written by hand), each
   drawn with a dose that reaches below the threshold (a symbol page with 20-70% words, a menu
   with 80-100% of its lines bulleted, teaser lists with 50-100% teasers, 3-40 repeats of a
   line under 1 to all lines of an article, a foreign text at times under an English
   headline), so recall below 1 is possible and tells where the thresholds sit. The
   ground truth is the generator's kind, never a filter. Precision: planted rows among the rows
   a filter fires on; recall: rows of the kinds it is meant for that it fires on. Three seeds
   (the junk differs by seed; BBC is the same), mean ± sd;
3. CPU time per row of each filter (process time, one core; the machine is shared).

Run: ``nice -n 10 .venv/bin/python benchmarks/filters.py [--per-kind 50] [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finegate.core.config import FiltersConfig
from finegate.core.filters import (
    BULLETS,
    ELLIPSES,
    RULES,
    Document,
    document,
    judge,
    language_detector,
    symbol_count,
)
from finegate.core.text import normalise_text
from finegate.demo import corpus_root, read_article

# Which filters are meant to catch each planted kind (the ground truth of recall).
TARGETS = {
    "too_short": {"word_count"}, "long_words": {"mean_word_length"},
    "symbol_page": {"alpha_share", "symbol_ratio"}, "table_dump": {"alpha_share", "symbol_ratio"},
    "repeated_lines": {"duplicate_lines"}, "repeated_phrases": {"top_ngrams", "duplicate_ngrams"},
    "ellipsis_list": {"ellipsis_lines"}, "bullet_menu": {"bullet_lines"},
    "non_english": {"language"},
}
# Written by hand for this benchmark (news-style, two or three sentences each).
FOREIGN = {
    "de": ["Die Regierung hat am Dienstag neue Pläne für den Bau von Schulen vorgestellt. Die "
           "meisten Gebäude sollen in Städten entstehen, in denen die Bevölkerung stark "
           "gewachsen ist.",
           "Der Verein gewann am Samstag das Pokalspiel mit zwei zu eins. Der Trainer lobte die "
           "Geduld seiner jungen Mannschaft nach einer schwierigen ersten Halbzeit.",
           "Die Aktien des Autoherstellers stiegen nach besseren Verkaufszahlen um vier Prozent. "
           "Analysten hatten vor einem Preiskampf mit der Konkurrenz gewarnt."],
    "fr": ["Le gouvernement a présenté mardi de nouveaux projets pour la construction d'écoles. "
           "La plupart des bâtiments seront construits dans les villes qui ont le plus grandi.",
           "Le club a remporté samedi le match de coupe par deux buts à un. L'entraîneur a salué "
           "la patience de sa jeune équipe après une première mi-temps difficile.",
           "Les actions du constructeur automobile ont progressé de quatre pour cent après des "
           "ventes meilleures que prévu en Europe et en Asie."],
    "es": ["El gobierno presentó el martes nuevos planes para construir escuelas. La mayoría de "
           "los edificios se levantarán en las ciudades donde más ha crecido la población.",
           "El equipo ganó el sábado el partido de copa por dos a uno. El entrenador elogió la "
           "paciencia de sus jóvenes jugadores tras una primera parte difícil.",
           "Las acciones del fabricante de coches subieron un cuatro por ciento después de unas "
           "ventas mejores de lo esperado en Europa y Asia."],
    "it": ["Il governo ha presentato martedì nuovi piani per la costruzione di scuole. La maggior "
           "parte degli edifici sorgerà nelle città in cui la popolazione è cresciuta di più.",
           "La squadra ha vinto sabato la partita di coppa per due a uno. L'allenatore ha lodato "
           "la pazienza dei suoi giovani giocatori dopo un primo tempo difficile."],
    "nl": ["De regering heeft dinsdag nieuwe plannen gepresenteerd voor de bouw van scholen. De "
           "meeste gebouwen komen in steden waar de bevolking het sterkst is gegroeid.",
           "De club won zaterdag de bekerwedstrijd met twee tegen een. De trainer prees het "
           "geduld van zijn jonge ploeg na een moeilijke eerste helft."],
    "pt": ["O governo apresentou na terça-feira novos planos para a construção de escolas. A "
           "maioria dos edifícios ficará nas cidades onde a população mais cresceu.",
           "O clube venceu no sábado o jogo da taça por dois a um. O treinador elogiou a "
           "paciência da sua jovem equipa depois de uma primeira parte difícil."],
    "sv": ["Regeringen presenterade på tisdagen nya planer för att bygga skolor. De flesta "
           "byggnaderna ska ligga i städer där befolkningen har vuxit mest."],
    "pl": ["Rząd przedstawił we wtorek nowe plany budowy szkół. Większość budynków powstanie w "
           "miastach, w których liczba mieszkańców wzrosła najbardziej."],
}
BOILERPLATE = ["Share this article on Facebook and Twitter", "Advertisement",
               "Click here to subscribe to our newsletter", "All rights reserved",
               "Cookies help us deliver our services", "Skip to main content"]
SYMBOLS = list("★☆■□◆◇▲△●○♦♣♠♥※→←↑↓=+<>|~#@*§¤")
MENU = ["Home", "News", "Sport", "Weather", "Business", "Contact us", "About", "Login",
        "Free shipping on orders over 50", "Terms and conditions", "Privacy policy", "Search"]
SHORT = ["Click here", "N/A", "TBD", "Untitled", "Read more", "404", "Loading", "Next page",
         "Comments (0)", "Subscribe"]


def load_bbc() -> list[tuple[str, str]]:
    """Every BBC News article as landed: (raw text with its lines, id)."""
    rows = []
    for path in sorted(corpus_root().glob("*/*.txt")):
        rows.append((read_article(path), f"{path.parent.name}/{path.name}"))
    return rows


def as_document(raw: str) -> Document:
    """The document the clean stage builds from a raw text."""
    return document(normalise_text(raw), [normalise_text(line) for line in raw.splitlines()])


def sentences(raw: str) -> list[str]:
    return [s.strip() + "." for s in normalise_text(raw).split(". ") if len(s.split()) > 5]


def make_junk(kind: str, rng: random.Random, bbc: list[str]) -> str:
    """One planted junk text of ``kind``."""
    article = rng.choice(bbc)
    if kind == "too_short":
        return rng.choice(SHORT)
    if kind == "long_words":
        urls = [f"https://www.example-news-site.com/{rng.choice(['world', 'business'])}/"
                f"{rng.randrange(2000, 2025)}/article-{rng.randrange(10**6)}.html"
                for _ in range(rng.randint(3, 12))]
        blob = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop0123456789+/")
                       for _ in range(rng.randint(200, 600)))
        return "\n".join(urls) if rng.random() < 0.5 else blob
    if kind == "symbol_page":
        word_share = rng.uniform(0.2, 0.7)  # from symbols only to mostly words
        tokens = [rng.choice(["SALE", "Best", "offers", "today", "new", "price", "quality",
                              "delivery"]) if rng.random() < word_share
                  else "".join(rng.choices(SYMBOLS, k=rng.randint(1, 6)))
                  for _ in range(rng.randint(20, 120))]
        return " ".join(tokens)
    if kind == "table_dump":
        cols = rng.randint(3, 7)
        lines = [[f"{rng.uniform(0, 1000):.{rng.randint(0, 2)}f}" for _ in range(cols)]
                 for _ in range(rng.randint(4, 30))]
        caption = rng.choice(sentences(article) or [""]) if rng.random() < 0.5 else ""
        if rng.random() < 0.5:
            header = ["id", "q1", "q2", "q3", "q4", "q5", "total"][:cols]
            return caption + "\n" + "\n".join(",".join(line) for line in [header, *lines])
        return caption + "\n" + "\n".join("| " + " | ".join(line) + " |" for line in lines)
    if kind == "repeated_lines":
        lines = [line for line in article.split("\n") if line.strip()]
        lines = lines[:rng.randint(1, len(lines))]  # a short or a whole article...
        lines += [rng.choice(BOILERPLATE)] * rng.randint(3, 40)  # ...with a line repeated
        return "\n".join(lines)
    if kind == "repeated_phrases":
        words = normalise_text(article).split()
        start = rng.randrange(max(len(words) - 30, 1))
        chunk = " ".join(words[start:start + rng.randint(6, 20)])
        return " ".join([chunk] * max(4, 60 // max(len(chunk.split()), 1) + 1))
    if kind == "ellipsis_list":
        teasers = rng.sample(sentences(article) or [article[:80]],
                             k=min(rng.randint(4, 12), len(sentences(article)) or 1))
        teaser_share = rng.uniform(0.5, 1.0)  # the other lines are whole sentences
        return "\n".join(" ".join(t.split()[:rng.randint(5, 12)]) + rng.choice(["...", "…"])
                         if rng.random() < teaser_share else t for t in teasers)
    if kind == "bullet_menu":
        bullet = rng.choice(["•", "-", "*", "●", "▪"])
        bulleted = rng.uniform(0.8, 1.0)  # some menus have an unbulleted line or two
        return "\n".join(f"{bullet} {item}" if rng.random() < bulleted else item
                         for item in rng.sample(MENU, rng.randint(5, 12)))
    if kind == "non_english":
        paragraphs = FOREIGN[rng.choice(sorted(FOREIGN))]
        chosen = rng.sample(paragraphs, rng.randint(1, len(paragraphs)))
        # a foreign text under an English headline, at times
        headline = article.split("\n")[0] + "\n\n" if rng.random() < 0.3 else ""
        return headline + "\n\n".join(chosen)
    raise ValueError(kind)


def fires(docs: list[Document], config: FiltersConfig) -> pd.DataFrame:
    """One boolean column per filter (each on its own), plus the default chain's first drop."""
    out = {name: [check(d, getattr(config, name)) is not None for d in docs]
           for name, check in RULES.items()}
    out["chain"] = [judge(d, config).reason is not None for d in docs]
    return pd.DataFrame(out)


def clean_loss(bbc_fires: pd.DataFrame) -> dict[str, dict[str, float]]:
    n = len(bbc_fires)
    return {name: {"dropped": int(bbc_fires[name].sum()),
                   "share": float(bbc_fires[name].sum() / n)} for name in bbc_fires}


def planted_scores(bbc_fires: pd.DataFrame, junk_fires: pd.DataFrame,
                   kinds: list[str]) -> dict[str, dict[str, float]]:
    """Precision and recall per filter on BBC + junk; recall per kind of the chain."""
    kinds_s = pd.Series(kinds)
    scores: dict[str, dict[str, float]] = {}
    for name in RULES:
        on_junk, on_clean = int(junk_fires[name].sum()), int(bbc_fires[name].sum())
        meant = kinds_s.map(lambda k, name=name: name in TARGETS[k])
        scores[name] = {
            "precision": on_junk / max(on_junk + on_clean, 1),
            "recall": float(junk_fires.loc[meant.values, name].mean()),
            "fires_on_junk": on_junk}
    for kind in TARGETS:
        scores[f"chain:{kind}"] = {"recall": float(junk_fires.loc[(kinds_s == kind).values,
                                                                  "chain"].mean())}
    on_junk, on_clean = int(junk_fires["chain"].sum()), int(bbc_fires["chain"].sum())
    scores["chain"] = {"precision": on_junk / max(on_junk + on_clean, 1),
                       "recall": float(junk_fires["chain"].mean())}
    return scores


def bbc_extremes(docs: list[Document], config: FiltersConfig) -> dict[str, float]:
    """How close clean text comes to each threshold: the worst value over the BBC rows."""
    from lingua import Language

    def share(lines: tuple[str, ...], test) -> float:
        return sum(map(test, lines)) / len(lines) if len(lines) >= 3 else 0.0

    detector = language_detector()
    words = [d.words for d in docs]
    chars = [[c for c in d.text if not c.isspace()] for d in docs]
    mean_len = [np.mean([len(w) for w in ws if any(c.isalnum() for c in w)]) for ws in words]
    return {
        "min_words": min(len(ws) for ws in words), "max_words": max(len(ws) for ws in words),
        "min_mean_word_length": float(min(mean_len)),
        "max_mean_word_length": float(max(mean_len)),
        "min_alpha_share": min(sum(c.isalpha() for c in cs) / len(cs) for cs in chars),
        "max_symbols_per_word": max(symbol_count(d.text) / len(d.words) for d in docs),
        "max_repeated_line_share": max(repeated_share(d.lines) for d in docs),
        "max_ellipsis_line_share": max(share(d.lines, lambda x: x.endswith(ELLIPSES))
                                       for d in docs),
        "max_bullet_line_share": max(share(d.lines, lambda x: x.startswith(BULLETS))
                                     for d in docs),
        "min_english_confidence": min(detector.compute_language_confidence(
            d.text[:config.language.max_chars], Language.ENGLISH) for d in docs),
    }


def repeated_share(lines: tuple[str, ...]) -> float:
    return (len(lines) - len(set(lines))) / len(lines) if len(lines) >= 3 else 0.0


def time_per_row(docs: list[Document], config: FiltersConfig) -> dict[str, float]:
    out = {}
    for name, check in RULES.items():
        rule = getattr(config, name)
        start = time.process_time()
        for d in docs:
            check(d, rule)
        out[name] = 1000 * (time.process_time() - start) / len(docs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-kind", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/filters.json")
    args = parser.parse_args()
    config = FiltersConfig()
    language_detector()  # built once, outside the timings

    raw_bbc = load_bbc()
    bbc_docs = [as_document(raw) for raw, _ in raw_bbc]
    bbc_fires = fires(bbc_docs, config)
    loss = clean_loss(bbc_fires)
    lost_rows = {name: [raw_bbc[i][1] for i in np.flatnonzero(bbc_fires[name])][:10]
                 for name in RULES}
    timings = time_per_row(bbc_docs, config)
    extremes = bbc_extremes(bbc_docs, config)

    per_seed = []
    for seed in args.seeds:
        rng = random.Random(seed)
        kinds = [k for k in TARGETS for _ in range(args.per_kind)]
        junk = [as_document(make_junk(k, rng, [r for r, _ in raw_bbc])) for k in kinds]
        per_seed.append(planted_scores(bbc_fires, fires(junk, config), kinds))

    summary = {key: {metric: {"mean": float(np.mean([s[key][metric] for s in per_seed])),
                              "sd": float(np.std([s[key][metric] for s in per_seed]))}
                     for metric in per_seed[0][key]} for key in per_seed[0]}
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
              "bbc_rows": len(raw_bbc), "per_kind": args.per_kind, "seeds": args.seeds,
              "clean_loss": loss, "clean_loss_rows": lost_rows, "ms_per_row": timings,
              "bbc_extremes": extremes,
              "planted": summary, "config": config.model_dump()}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"clean BBC ({len(raw_bbc)} rows) | planted junk {args.per_kind}/kind, seeds "
          f"{args.seeds}")
    print(f"{'filter':18} {'BBC lost':>12} {'precision':>14} {'recall':>14} {'ms/row':>7}")
    for name in [*RULES, "chain"]:
        p, r = summary[name].get("precision"), summary[name].get("recall")
        print(f"{name:18} {loss[name]['dropped']:>5} ({100 * loss[name]['share']:.2f}%) "
              f"{p['mean']:.3f} ± {p['sd']:.3f}  {r['mean']:.3f} ± {r['sd']:.3f} "
              f"{timings.get(name, float('nan')):7.3f}")
    for kind in TARGETS:
        r = summary[f"chain:{kind}"]["recall"]
        print(f"  caught by the default chain: {kind:17} {r['mean']:.3f} ± {r['sd']:.3f}")
    print("worst values on clean BBC:", {k: round(v, 3) for k, v in extremes.items()})
    for name, rows in lost_rows.items():
        if rows:
            print(f"  BBC rows lost to {name}: {rows}")


if __name__ == "__main__":
    main()
