"""What ``label_quality.policy: auto`` chooses on the BBC demo corpus, and on noisy copies of it.

The demo corpus's training rows (benchmarks/cleaning_pays.py ``bbc``: exact duplicates removed,
the 20% test share left out) are reviewed as one full review would: the label detector
(tasks/labels.py) then the proxy check (finegate/core/policy_check.py) via ``resolve_policy``.
Conditions: the corpus's own labels, and copies with noise from finegate/core/noise.py.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/auto_policy_demo.py \\
        --conditions clean,symmetric:0.4,annotator:0.4 --out docs/cleaning-pays/auto.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cleaning_pays import bbc  # noqa: E402

from finegate.core.config import LabelsConfig  # noqa: E402
from finegate.core.noise import add_noise  # noqa: E402
from finegate.tasks.labels import label_issues, resolve_policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", default="clean,symmetric:0.4,annotator:0.4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--out", default="docs/cleaning-pays/auto.json")
    args = parser.parse_args()
    train, _, labels = bbc(args.limit)
    report = {"rows": len(train), "seed": args.seed, "conditions": {}}
    for condition in args.conditions.split(","):
        started = time.perf_counter()
        kind, _, rate = condition.partition(":")
        rows = train if kind == "clean" else add_noise(kind, train, float(rate), labels,
                                                       seed=args.seed)
        rows = rows.assign(source="bbc", position=range(len(rows)))
        if "annotator_labels" not in rows:
            rows = rows.assign(annotator_labels=None)
        issues, _ = label_issues(rows["text"].tolist(), rows["label"].tolist(), labels, 5)
        applied, check = resolve_policy(rows, issues, LabelsConfig(policy="auto"), labels)
        truth = rows["is_noisy"].mean() if "is_noisy" in rows else 0.0
        report["conditions"][condition] = {
            "noisy_share": float(truth), "flagged": int(issues["is_label_issue"].sum()),
            "chosen": applied.policy, "check": check,
            "seconds": round(time.perf_counter() - started, 1)}
        effects = "; ".join(f"{p} {e['gain']:+.3f} (p_better {e['confidence']:.2f}, "
                            f"{e['rows_changed']} rows)" for p, e in check["effects"].items())
        print(f"{condition}: {len(rows)} rows, noisy {truth:.2f}, flagged "
              f"{int(issues['is_label_issue'].sum())}; auto chose {applied.policy}: {effects}; "
              f"validation {check['validation_rows']} ({check['validation_labels']})",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
