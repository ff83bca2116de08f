"""The HTML report, checked in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from finegate.core.config import Config, TrainConfig
from finegate.core.lake import Lake, write_json
from finegate.core.results import ReportInputs
from finegate.tasks.evaluate import evaluate_model
from finegate.tasks.finetune import train
from finegate.tasks.quality import build_scorecard
from finegate.tasks.report import render_report
from tests.factories import LABELS, curate, gate_on

SCRIPT = "<script>document.title='pwned'</script>"


@pytest.fixture
def report_page(dirty_landing: Path, tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A real run's report: curated dirty landing (with a script in a text), gate, evaluation."""
    (dirty_landing / "day2" / "evil.jsonl").write_text(
        f'{{"id": "evil", "text": "{SCRIPT} and then the line breaks\n'  # quarantined, raw kept
        + json.dumps({"id": "entity", "label": "sports", "text": html.escape(SCRIPT)
                      + " The striker scored a late goal and the team won the cup final."})
        + "\n")  # valid: the cleaner unescapes it into a literal <script> in curated text
    lake = Lake.at(tmp_path / "lake")
    snapshot, dedup, review = curate(dirty_landing, lake, noise=True)
    curated = pq.read_table(snapshot.data_path, columns=["id", "text"]).to_pylist()
    assert any(r["id"] == "entity" and SCRIPT in r["text"] for r in curated)
    card = build_scorecard(131, snapshot, lake, LABELS, dedup, review)
    assert card["accounting"]["holds"]
    scorecard = write_json(Path(snapshot.path) / "scorecard.json", card)
    config = Config(lake_path=str(tmp_path / "lake"), labels=LABELS, train=TrainConfig(
        model_path=str(tiny_model_dir), device="cpu", cpu_max_steps=2, cpu_max_length=16))
    run_dir = tmp_path / "run"
    gate = gate_on(snapshot.data_path, card, config, run_dir)
    model = train(snapshot.data_path, LABELS, config.train, tmp_path / "model")
    evaluation = evaluate_model(model.model_dir, snapshot.data_path, run_dir,
                                label_set=config.label_set, train=config.train,
                                evaluation=config.evaluation)
    return render_report(ReportInputs(
        run_name="test-run", run_dir=str(run_dir), scorecard_path=str(scorecard),
        gate_path=gate.gate_path, data_path=snapshot.data_path,
        duplicates_path=snapshot.duplicates_path, decisions_path=review.decisions_path,
        quarantine_dir=str(lake.quarantine_root),
        evaluation_path=evaluation.report_path, mlflow="sqlite:///x models:/m/1",
    ), run_dir / "report.html")


def test_report_has_every_section_and_escapes_user_text(report_page: Path) -> None:
    page = report_page.read_text()
    for section in ("Scorecard", "Quarantined rows", "Class balance", "Text length",
                    "Duplicate clusters", "Heuristic filters",
                    "Most suspicious labels", "Annotator agreement", "Drift", "Quality gate",
                    "Evaluation: test", "Misclassified examples"):
        assert section in page, section
    assert SCRIPT not in page
    assert html_escaped(SCRIPT) in page
    assert "data:image/png;base64," in page  # confusion matrix embedded: one file


def html_escaped(text: str) -> str:
    return html.escape(text)


BROWSER = [shutil.which("chromium") or "chromium", "--headless=new", "--no-sandbox",
           "--disable-gpu", "--allow-file-access-from-files"]
needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="needs the Debian chromium package (apt-get install chromium)")


def rendered_dom(page: Path) -> str:
    """The page's DOM after Chromium ran it (any script that could run has run)."""
    return subprocess.run([*BROWSER, "--dump-dom", page.as_uri()], capture_output=True,
                          text=True, timeout=120, check=True).stdout


@needs_chromium
def test_report_renders_in_headless_chromium(report_page: Path, tmp_path: Path) -> None:
    from PIL import Image

    browser = BROWSER
    dom = rendered_dom(report_page)
    assert "<title>Finegate run test-run</title>" in dom  # the planted script did not run
    assert "pwned" not in re.findall(r"<title>(.*?)</title>", dom)[0]
    assert "&lt;script&gt;document.title" in dom
    widths = [float(w) for w in re.findall(r"class=\"bar\"[^>]*width=\"([\d.]+)\"", dom)]
    assert len(widths) >= 3 and max(widths) > 0  # bar chart and histogram have bars
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,2400",
                    report_page.as_uri()], capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    assert len(set(image.getdata())) > 20  # not a blank page
    print(f"screenshot: {shot}")


# Every piece of user text the report shows, each with its own payload: a script and an image
# whose onerror would run, both renaming the page if they ever ran.
TEXT_PATHS = ["suspicious-label", "suggested-label", "misclassified", "predicted",
              "duplicate-cluster", "duplicate-labels", "quarantine-raw", "quarantine-reason",
              "gate-found", "gate-reason", "label-name", "annotation", "drift", "mlflow"]


def payload(path: str) -> str:
    return (f"<script>document.title='pwned-{path}'</script>"
            f"<img src=x onerror=\"document.title='pwned-{path}'\">")


@pytest.fixture
def markup_everywhere(tmp_path: Path) -> Path:
    """A report whose inputs carry markup in every text path (written by hand, so each path is
    sure to be rendered)."""
    from finegate.tasks.report import render_report

    p = payload
    data = tmp_path / "data.parquet"
    pd.DataFrame({"id": ["r1", "r2"], "text": ["A plain text.", p("suspicious-label")],
                  "label": ["sports", "tech"]}).to_parquet(data)
    decisions = tmp_path / "decisions.parquet"
    pd.DataFrame({"id": ["r2"], "label": ["tech"], "suggested_label": [p("suggested-label")],
                  "label_quality": [0.01], "action": ["flag"], "is_label_issue": [True]}
                 ).to_parquet(decisions)
    duplicates = tmp_path / "duplicates.parquet"
    pd.DataFrame({"cluster": [p("duplicate-cluster")], "duplicate_of": ["r1"], "id": ["r3"],
                  "label": [p("duplicate-labels")]}).to_parquet(duplicates)
    quarantine = tmp_path / "quarantine" / "day1" / "ingest"
    quarantine.mkdir(parents=True)
    pd.DataFrame({"drop": ["day1"], "stage": ["ingest"], "reason": [p("quarantine-reason")],
                  "raw": [p("quarantine-raw")]}).to_parquet(quarantine / "part.parquet")
    card = {"snapshot": "ab" * 32, "rows": 2, "deltas": {}, "class_balance": 1.0,
            "label_counts": {"sports": 1, p("label-name"): 1},
            "annotation": {p("annotation"): 0.5}, "drift": {"new_drop": p("drift")}}
    gate = {"passed": False, "data_docs": str(tmp_path / "docs" / "index.html"),
            "reason": p("gate-reason"),
            "expectations": [{"suite": "rows", "severity": "critical", "success": False,
                              "expectation": "label_in_set", "found": p("gate-found")}]}
    evaluation = {"test": {"accuracy": 0.5, "macro_f1": 0.5, "rows": 2, "per_class": {},
                           "confusion_png": str(tmp_path / "none.png"),
                           "misclassified": [{"text": p("misclassified"), "label": "sports",
                                              "predicted": p("predicted")}]}}
    for name, content in {"scorecard": card, "gate": gate, "evaluation": evaluation}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    return render_report(ReportInputs(
        run_name="test-run", run_dir=str(tmp_path), scorecard_path=str(tmp_path / "scorecard.json"),
        gate_path=str(tmp_path / "gate.json"), data_path=str(data),
        duplicates_path=str(duplicates), decisions_path=str(decisions),
        quarantine_dir=str(tmp_path / "quarantine"),
        evaluation_path=str(tmp_path / "evaluation.json"), mlflow=p("mlflow"),
    ), tmp_path / "report.html")


def test_every_text_path_of_the_report_is_escaped(markup_everywhere: Path) -> None:
    page = markup_everywhere.read_text()
    for path in TEXT_PATHS:
        assert payload(path) not in page, path
        assert html.escape(payload(path)) in page, path  # shown, as text


@needs_chromium
def test_markup_in_any_text_path_never_runs_in_chromium(markup_everywhere: Path) -> None:
    dom = rendered_dom(markup_everywhere)
    head = dom[:dom.index("</head>")]
    assert re.findall(r"<title>(.*?)</title>", head) == ["Finegate run test-run"]
    body = dom[dom.index("<body"):]
    assert "<script" not in body and "<img" not in body  # no element made from user text
    for path in TEXT_PATHS:  # each payload is on the page as the text it was
        assert f"&lt;script&gt;document.title='pwned-{path}'&lt;/script&gt;" in body, path


def test_gate_messages_in_prefect_artifacts_make_no_live_html_or_markdown(monkeypatch,
                                                                         tmp_path: Path) -> None:
    """The gate's Markdown artifact, rendered as CommonMark: user text (a label, a found value)
    must neither become an element (script, image, link, emphasis) nor lose its characters."""
    from contextlib import nullcontext

    from markdown_it import MarkdownIt

    from finegate.core.results import GateResult
    from finegate.flows import steps
    from finegate.tasks import validate

    found = ("label '<script>alert(1)</script>' [click here](http://evil.example/) "
             "![x](http://evil.example/t.png) <a href='http://evil.example/'>a</a> *bold*")
    artifacts: list[str] = []
    monkeypatch.setattr(steps, "create_markdown_artifact",
                        lambda markdown, **_: artifacts.append(markdown))
    monkeypatch.setattr(steps, "on_dask", nullcontext)
    monkeypatch.setattr(steps, "record_history", lambda *args: None)
    monkeypatch.setattr(steps.write_report, "fn", lambda *args, **kwargs: None)
    outcomes = iter([validate.QualityGateFailed(found),
                     GateResult(passed=True, gate_path="g", data_docs="d", failures=[],
                                warnings=[found], skipped=[])])

    def gate(*args, **kwargs):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(validate, "run_gate", gate)
    inputs = ReportInputs(run_name="r", run_dir=str(tmp_path), scorecard_path="", gate_path="",
                          data_path="", duplicates_path="", decisions_path="", quarantine_dir="")
    curated = type("Curated", (), {"data_path": "", "digest": "d"})()
    scored = type("Scored", (), {"scorecard_path": ""})()
    with pytest.raises(validate.QualityGateFailed):
        steps.run_gate.fn(Lake.at(tmp_path / "lake"), curated, scored, "", LABELS, inputs)
    steps.run_gate.fn(Lake.at(tmp_path / "lake"), curated, scored, "", LABELS, inputs)
    assert len(artifacts) == 2
    for markdown in artifacts:
        rendered = MarkdownIt("commonmark").render(markdown)
        user_part = rendered[rendered.index("label "):]
        assert not re.search(r"<(script|img|a|em|strong)\b", user_part), user_part
        text = html.unescape(re.sub(r"<[^>]+>", "", user_part))
        assert found in text  # shown as the characters it was


def test_leakage_pairs_are_shown_side_by_side_and_escaped(tmp_path: Path) -> None:
    from finegate.tasks.report import leakage_parts

    path = tmp_path / "leakage.json"
    path.write_text(json.dumps({
        "golden_rows": 3, "leaked_golden": [1],
        "pairs": [{"golden_row": 1, "golden_text": "<b>golden</b> story", "id": "a",
                   "split": "train", "kind": "near", "similarity": 0.8}],
        "cross_split_exact": 0, "cross_split_near": 1,
        "cross_split_by_splits": {"test|train": 1},
        "cross_split_pairs": [{"id_a": "a", "split_a": "train", "id_b": "b",
                               "split_b": "test", "kind": "near", "similarity": 0.61}]}))
    data = pd.DataFrame({"id": ["a", "b"], "text": ["<script>x</script> row a", "row b text"]})
    page = "".join(leakage_parts({"leakage": {"pairs": str(path)}}, data))
    assert "Golden rows found in the snapshot (1 of 3)" in page
    assert "&lt;b&gt;golden&lt;/b&gt; story" in page and "<script>" not in page
    assert "0 exact, 1 near pairs" in page and "row b text" in page and "0.6100" in page
    assert "not checked" in "".join(leakage_parts({"leakage": None}, data))


def test_suspicious_labels_show_a_persons_label_only_where_a_person_answered(
        tmp_path: Path) -> None:
    """Decision files carry human_label for every row; a null one reads back as NaN, which
    must not show as "person: nan"."""
    import pyarrow as pa

    from finegate.tasks.report import suspicious_labels

    decisions = tmp_path / "decisions.parquet"
    pq.write_table(pa.table({
        "id": ["r1", "r2"], "label": ["tech", "sports"], "suggested_label": ["sports", "tech"],
        "label_quality": [0.1, 0.2], "is_label_issue": [True, True],
        "action": ["drop", "flag"], "human_label": pa.array([None, "tech"], pa.string())}),
        decisions)
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": ["r1", "r2"], "text": ["one", "two"]}), data)
    rows = {r["id"]: r["action"] for r in suspicious_labels(str(decisions), str(data))}
    assert rows == {"r1": "drop", "r2": "person: tech"}
