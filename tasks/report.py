"""Report: one self-contained HTML page per nightly run.

Scorecard, class balance bar chart, length histogram, duplicate clusters, quarantined rows, the
most suspicious labels with their suggested fix, annotator agreement, drift against the previous
snapshot, the gate result, leakage (golden and cross-split pairs side by side), freshness under
the time split, evaluation with confusion matrix, and links to Data Docs and MLflow.
Charts are inline SVG (no JavaScript, no network); every piece of user text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from finegate.core.drift import word_counts
from finegate.core.lake import read_json, write_json
from finegate.core.results import ReportInputs

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}.ok{color:#1a7f37}.bad{color:#cf222e}
.muted{color:#666}.text{max-width:520px;white-space:pre-wrap}svg{background:#fff}
"""


def esc(value: Any) -> str:
    """HTML-escape anything for the page."""
    return html.escape(str(value))


def table(rows: list[dict[str, Any]], empty: str = "none") -> str:
    """An HTML table of dict rows (keys as header), every cell escaped."""
    if not rows:
        return f"<p class='muted'>{esc(empty)}</p>"
    header = "".join(f"<th>{esc(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td class='text'>{esc(_fmt(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _fmt(value: Any) -> Any:
    return f"{value:.4f}" if isinstance(value, float) else value


def bar_chart(values: dict[str, float], title: str, width: int = 520) -> str:
    """A horizontal SVG bar chart."""
    top = max(values.values(), default=0) or 1
    rows = []
    for i, (name, value) in enumerate(values.items()):
        length = 300 * value / top
        rows.append(f"<text x='0' y='{20 + 24 * i + 12}' font-size='12'>{esc(name)}</text>"
                    f"<rect class='bar' x='140' y='{20 + 24 * i}' width='{length:.1f}' "
                    f"height='16' fill='#4c78a8'/><text x='{145 + length:.1f}' "
                    f"y='{20 + 24 * i + 12}' font-size='12'>{esc(_fmt(value))}</text>")
    height = 30 + 24 * len(values)
    return (f"<svg role='img' aria-label='{esc(title)}' width='{width}' height='{height}'>"
            f"<text x='0' y='12' font-size='13' font-weight='bold'>{esc(title)}</text>"
            + "".join(rows) + "</svg>")


def histogram(values: list[float], title: str, bins: int = 20) -> str:
    """A vertical SVG histogram."""
    if not values:
        return f"<p class='muted'>{esc(title)}: no data</p>"
    counts, edges = np.histogram(values, bins=bins)
    top = counts.max() or 1
    bars = "".join(
        f"<rect class='bar' x='{40 + 24 * i}' y='{190 - 160 * c / top:.1f}' width='20' "
        f"height='{160 * c / top:.1f}' fill='#f58518'><title>{edges[i]:.0f}-{edges[i + 1]:.0f}: "
        f"{c}</title></rect>" for i, c in enumerate(counts))
    return (f"<svg role='img' aria-label='{esc(title)}' width='{60 + 24 * bins}' height='220'>"
            f"<text x='0' y='12' font-size='13' font-weight='bold'>{esc(title)}</text>{bars}"
            f"<text x='40' y='210' font-size='11'>{edges[0]:.0f}</text>"
            f"<text x='{24 * bins}' y='210' font-size='11'>{edges[-1]:.0f}</text></svg>")


def image(path: str | Path) -> str:
    """A PNG embedded in the page (the report stays one file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{esc(Path(path).stem)}' src='data:image/png;base64,{data}'/>"


def suspicious_labels(decisions_path: str, data_path: str, limit: int = 20) -> list[dict]:
    """The rows whose labels look most wrong, with the suggested label."""
    decisions = pq.read_table(decisions_path).to_pandas()
    flagged = decisions.loc[decisions["is_label_issue"]].nsmallest(limit, "label_quality")
    data = pq.read_table(data_path, columns=["id", "text"]).to_pandas()
    texts = dict(zip(data["id"], data["text"], strict=True))
    return [{"id": r.id, "label": r.label, "suggested": r.suggested_label,
             "quality": float(r.label_quality),
             # a null string column reads back as NaN, not None
             "action": (f"person: {r.human_label}" if isinstance(
                 getattr(r, "human_label", None), str) else r.action),
             "text": str(texts.get(r.id, "(dropped)"))[:300]}
            for r in flagged.itertuples()]


def duplicate_clusters(duplicates_path: str, limit: int = 20) -> list[dict]:
    """The largest duplicate clusters from the dedup log."""
    log = pq.read_table(duplicates_path).to_pandas()
    if log.empty:
        return []
    sizes = log.groupby(["cluster", "duplicate_of"]).agg(
        dropped=("id", "count"), labels=("label", lambda s: ", ".join(sorted(set(s)))))
    top = sizes.sort_values("dropped", ascending=False).head(limit).reset_index()
    return top.to_dict("records")


def quarantine_sample(quarantine_dir: str, limit: int = 20) -> list[dict]:
    """The first quarantined rows, with stage, reason and raw content."""
    files = sorted(Path(quarantine_dir).glob("*/*/*.parquet"))
    rows: list[dict] = []
    for path in files:
        frame = pq.read_table(path, columns=["drop", "stage", "reason", "raw"]).to_pandas()
        rows += [{**r, "raw": str(r["raw"])[:300]} for r in frame.to_dict("records")]
        if len(rows) >= limit:
            break
    return rows[:limit]


def leakage_parts(card: dict[str, Any], data: Any) -> list[str]:
    """The golden and cross-split leakage pairs, side by side with the texts they repeat."""
    path = Path((card.get("leakage") or {}).get("pairs") or "")
    if not path.is_file():
        return ["<h2>Leakage</h2>", "<p class='muted'>not checked</p>"]
    leakage, texts = read_json(path), dict(zip(data["id"], data["text"], strict=True))
    golden = [{"golden row": p["golden_row"], "golden text": p["golden_text"],
               "snapshot row": p["id"], "split": p["split"], "kind": p["kind"],
               "similarity": p["similarity"], "snapshot text": str(texts.get(p["id"], ""))[:200]}
              for p in leakage.get("pairs", [])]
    cross = [{"row": p["id_a"], "split": p["split_a"], "text": str(texts.get(p["id_a"], ""))[:200],
              "other row": p["id_b"], "other split": p["split_b"],
              "other text": str(texts.get(p["id_b"], ""))[:200], "kind": p["kind"],
              "similarity": p["similarity"]} for p in leakage.get("cross_split_pairs", [])[:50]]
    return ["<h2>Leakage</h2>",
            f"<h3>Golden rows found in the snapshot ({len(leakage.get('leaked_golden', []))} of "
            f"{leakage.get('golden_rows', 0)})</h3>", table(golden, "no golden row leaked"),
            f"<h3>Rows repeated across splits ({leakage.get('cross_split_exact', 0)} exact, "
            f"{leakage.get('cross_split_near', 0)} near pairs: "
            f"{esc(leakage.get('cross_split_by_splits', {}))})</h3>",
            table(cross, "no pair of rows straddles two splits")]


def freshness_parts(run_dir: str) -> list[str]:
    """Under the time split: the newest drops' score against the older drops', and drift."""
    path = Path(run_dir) / "freshness.json"
    if not path.is_file():
        return []
    fresh = read_json(path)
    scores = [{"rows": name, **{k: v for k, v in fresh[name].items()}}
              for name in ("newest", "older")]
    drift = [{"against": k, **v} for k, v in fresh["drift"].items()]
    return [f"<h2>Freshness: newest drop(s) {esc(', '.join(fresh['newest_drops']))} vs older "
            f"(macro-F1 change {fresh['macro_f1_change']:+.3f})</h2>", table(scores),
            "<h3>Drift of the newest drop(s)</h3>", table(drift)]


def crossval_parts(run_dir: str) -> list[str]:
    """Under kfold: the score of every fold's model on its fold, mean and spread."""
    path = Path(run_dir) / "crossval.json"
    if not path.is_file():
        return []
    cv = read_json(path)
    return [f"<h2>Cross-validation over {cv['folds']} folds: macro-F1 "
            f"{cv['macro_f1']['mean']:.3f} ± {cv['macro_f1']['std']:.3f}, accuracy "
            f"{cv['accuracy']['mean']:.3f} ± {cv['accuracy']['std']:.3f}</h2>",
            table(cv["rounds"]),
            *([f"<p>The registered model trained on every fold but fold "
               f"{cv['final']['held_out_fold']} ({cv['final']['train_rows']} rows, "
               f"{cv['final']['steps'] or 'the configured'} steps); that fold is its test "
               f"split.</p>"] if "final" in cv else [])]


def render_report(run: ReportInputs, out: Path) -> Path:
    """Write the HTML report of a run from the paths and names in ``run``."""
    card = read_json(Path(run.scorecard_path))
    gate = read_json(Path(run.gate_path))
    evaluation_path = Path(run.evaluation_path or "")
    evaluation = read_json(evaluation_path) if evaluation_path.is_file() else {}
    data = pq.read_table(run.data_path, columns=["id", "text", "label"]).to_pandas()
    scalars = [{"metric": k, "value": v, "change vs previous": card["deltas"].get(k, "")}
               for k, v in card.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    shares = {k: v / max(card["rows"], 1) for k, v in card["label_counts"].items()}
    gate_rows = [{"suite": e["suite"], "severity": e["severity"],
                  "result": "pass" if e["success"] else "FAIL", "expectation": e["expectation"],
                  "found": e["found"]} for e in gate["expectations"]]
    parts = [
        f"<h1>Finegate run {esc(run.run_name)}</h1>",
        f"<p class='muted'>snapshot {esc(card['snapshot'])} · {card['rows']} rows · "
        f"<a href='{esc(os.path.relpath(gate['data_docs'], out.parent))}'>GX Data Docs</a> · "
        f"MLflow {esc(run.mlflow or 'not registered')}</p>",
        "<h2>Scorecard</h2>", table(scalars),
        "<h2>Class balance</h2>",
        bar_chart(shares, f"share of rows per label (balance {card['class_balance']:.3f})"),
        "<h2>Text length</h2>",
        histogram(word_counts(data["text"]).tolist(), "words per text"),
        "<h2>Duplicate clusters</h2>",
        table(duplicate_clusters(run.duplicates_path), "no duplicates"),
        "<h2>Heuristic filters</h2>",
        table([{"filter": k, **v} for k, v in card.get("filters", {}).items()],
              "no filter counts"),
        "<h2>Quarantined rows (sample)</h2>",
        table(quarantine_sample(run.quarantine_dir), "nothing quarantined"),
        "<h2>Most suspicious labels</h2>",
        table(suspicious_labels(run.decisions_path, run.data_path), "no label issues"),
        "<h2>Annotator agreement</h2>",
        table([{"metric": k, "value": v} for k, v in card["annotation"].items()
               if not isinstance(v, dict)], "no annotator labels"),
        "<h2>Drift against the previous snapshot</h2>",
        table([{"metric": k, "value": v} for k, v in card.get("drift", {}).items()]),
        "<h2>Quality gate: " + ("<span class='ok'>passed</span>" if gate["passed"]
                               else "<span class='bad'>failed</span>") + "</h2>",
        f"<p>{esc(gate.get('reason', ''))}</p>", table(gate_rows),
        *leakage_parts(card, data), *freshness_parts(run.run_dir),
        *crossval_parts(run.run_dir),
    ]
    for name, part in evaluation.items():
        if not isinstance(part, dict):
            continue
        per_class = [{"class": k, **{m: v for m, v in row.items()}}
                     for k, row in part["per_class"].items() if isinstance(row, dict)]
        parts += [f"<h2>Evaluation: {esc(name)} (accuracy {part['accuracy']:.3f}, macro-F1 "
                  f"{part['macro_f1']:.3f}, {part['rows']} rows)</h2>", table(per_class),
                  image(part["confusion_png"]) if Path(part["confusion_png"]).is_file() else "",
                  "<h3>Misclassified examples</h3>", table(part["misclassified"][:20])]
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Finegate run {esc(run.run_name)}</title><style>{STYLE}</style></head>"
            "<body>" + "\n".join(parts) + "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def write_report(run: ReportInputs) -> Path:
    """The run's HTML report in its run folder, with the ``run.json`` it is rendered from
    (``finegate report`` re-renders from it)."""
    write_json(Path(run.run_dir) / "run.json", asdict(run))
    return render_report(run, Path(run.run_dir) / "report.html")


def read_report_inputs(run_dir: Path) -> ReportInputs:
    """The report inputs a finished run saved in its folder."""
    return ReportInputs(**read_json(run_dir / "run.json"))
