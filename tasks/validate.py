"""Validate: the Great Expectations gate between the curated snapshot and training.

Runs the suites in ``expectations/`` (JSON, user-editable): ``curated_rows`` on the snapshot's
rows, ``curated_dataset`` on its one-row scorecard. An expectation whose ``meta.severity`` is
``critical`` stops the flow with :class:`QualityGateFailed`; ``warning`` ones are reported.
Results are stored in a file GX context inside the lake, which also builds the Data Docs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from prefect import task

from finegate.config import Config
from finegate.lake import Lake, write_json

ROW_SUITE, DATASET_SUITE = "curated_rows", "curated_dataset"


class QualityGateFailed(RuntimeError):
    """A critical expectation failed: the snapshot must not be trained on."""


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict and where its details are."""

    passed: bool
    gate_path: str
    data_docs: str
    failures: list[str]
    warnings: list[str]


def load_suite_json(expectations_path: str | Path, name: str) -> dict[str, Any]:
    """Read one suite's JSON from the expectations folder."""
    path = Path(expectations_path) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite {path} is missing; expectations_path in "
                                "the config must point at the project's expectations/ folder")
    return json.loads(path.read_text())


def scorecard_frame(scorecard: dict[str, Any]) -> pd.DataFrame:
    """The scorecard's scalar metrics as one row, for dataset-level expectations."""
    return pd.DataFrame([{k: v for k, v in scorecard.items() if isinstance(v, int | float)}])


def describe(result: Any, suite: str) -> dict[str, Any]:
    """One expectation result as a small JSON-able record with a readable message."""
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
    severity = (config.meta or {}).get("severity", "critical")
    details = result.result or {}
    found = details.get("observed_value")
    if found is None and "unexpected_count" in details:
        found = (f"{details['unexpected_count']} of {details.get('element_count')} rows "
                 f"unexpected, e.g. {details.get('partial_unexpected_list', [])[:3]}")
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return {"suite": suite, "expectation": config.type, "kwargs": kwargs, "severity": severity,
            "success": bool(result.success), "found": found,
            "message": f"{suite}: {config.type}({args}) found {found}"}


def _gx_context(root: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _checkpoint(context: Any, suite_json: dict[str, Any]) -> Any:
    """A checkpoint validating an in-memory frame against a suite, updating Data Docs."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.expectation_suite import ExpectationSuite

    name = suite_json["name"]
    suite = context.suites.add_or_update(ExpectationSuite(**suite_json))
    source = context.data_sources.add_or_update_pandas("finegate")
    asset = next((a for a in source.assets if a.name == name), None) or \
        source.add_dataframe_asset(name)
    batch = next((b for b in asset.batch_definitions if b.name == name), None) or \
        asset.add_batch_definition_whole_dataframe(name)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return context.checkpoints.add_or_update(gx.Checkpoint(
        name=name, validation_definitions=[definition], result_format="SUMMARY",
        actions=[UpdateDataDocsAction(name="update_data_docs")]))


def run_suites(frames: dict[str, pd.DataFrame], expectations_path: str | Path, gx_root: Path,
               parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate each frame against the suite of the same name; every expectation's outcome."""
    context = _gx_context(gx_root)
    outcomes = []
    for name, frame in frames.items():
        checkpoint = _checkpoint(context, load_suite_json(expectations_path, name))
        result = checkpoint.run(batch_parameters={"dataframe": frame},
                                expectation_parameters=parameters)
        for validation in result.run_results.values():
            outcomes += [describe(r, name) for r in validation.results]
    return outcomes


def gate(outcomes: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Messages of failed critical and failed warning expectations."""
    failed = [o for o in outcomes if not o["success"]]
    return ([o["message"] for o in failed if o["severity"] == "critical"],
            [o["message"] for o in failed if o["severity"] != "critical"])


def validate_snapshot(data_path: str, scorecard: dict[str, Any], config: Config,
                      out_dir: Path) -> GateResult:
    """Run both suites, write ``gate.json`` to ``out_dir``; raise if a critical one failed."""
    rows = pq.read_table(data_path, columns=["id", "text", "label", "split"]).to_pandas()
    gx_root = Lake.at(config.lake_path).root / "gx"
    outcomes = run_suites(
        {ROW_SUITE: rows, DATASET_SUITE: scorecard_frame(scorecard)},
        config.expectations_path, gx_root,
        {"label_set": config.labels, "label_count": len(config.labels)},
    )
    failures, warnings = gate(outcomes)
    docs = gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    path = write_json(out_dir / "gate.json", {"passed": not failures, "failures": failures,
                                              "warnings": warnings, "expectations": outcomes,
                                              "data_docs": str(docs)})
    if failures:
        raise QualityGateFailed(
            f"{len(failures)} critical expectation(s) failed, training skipped:\n  - "
            + "\n  - ".join(failures) + f"\nDetails: {path}; Data Docs: {docs}")
    return GateResult(passed=True, gate_path=str(path), data_docs=str(docs), failures=failures,
                      warnings=warnings)


@task(name="validate")
def validate(config: Config, data_path: str, scorecard: dict[str, Any],
             run_dir: str) -> GateResult:
    """Prefect task: the quality gate; a critical failure stops the flow before training."""
    return validate_snapshot(data_path, scorecard, config, Path(run_dir))
