"""The HTML report, checked in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

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
        f'{{"id": "evil", "text": "{SCRIPT} and then the line breaks\n')  # quarantined, raw kept
    lake = Lake.at(tmp_path / "lake")
    snapshot, dedup, review = curate(dirty_landing, lake, noise=True)
    card = build_scorecard(130, snapshot, lake, LABELS, dedup, review)
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
                    "Duplicate clusters",
                    "Most suspicious labels", "Annotator agreement", "Drift", "Quality gate",
                    "Evaluation: test", "Misclassified examples"):
        assert section in page, section
    assert SCRIPT not in page
    assert html_escaped(SCRIPT) in page
    assert "data:image/png;base64," in page  # confusion matrix embedded: one file


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs the Debian chromium package (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report_page: Path, tmp_path: Path) -> None:
    from PIL import Image

    browser = [shutil.which("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu",
               "--allow-file-access-from-files"]
    dom = subprocess.run([*browser, "--dump-dom", report_page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
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
