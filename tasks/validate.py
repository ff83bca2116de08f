"""Validate: the Great Expectations gate between the curated snapshot and training.

Three suites from ``expectations/`` (JSON, user-editable):
- ``curated_rows`` runs on every Parquet partition of the snapshot in parallel on the Dask
  cluster (GX 1.x has no Dask engine, so each partition is a pandas frame); the per-partition
  results are combined into one result with the true totals and unexpected counts;
- ``curated_dataset`` runs on the scorecard (aggregates over all partitions);
- ``curated_drift`` runs on the drift metrics against the previous snapshot.
An expectation whose ``meta.severity`` is ``critical`` stops the flow with
:class:`QualityGateFailed`; ``warning`` ones are reported. Results are stored in a file GX context
inside the lake, whose Data Docs are copied into the run folder.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from finegate.core.lake import read_json, write_json
from finegate.core.results import GateResult

ROW_SUITE, DATASET_SUITE, DRIFT_SUITE = "curated_rows", "curated_dataset", "curated_drift"
SUITES = (ROW_SUITE, DATASET_SUITE, DRIFT_SUITE)
ROW_COLUMNS = ["id", "text", "label", "split"]
SUMMED = ("element_count", "unexpected_count", "missing_count")
SEVERITIES = ("critical", "warning")
# Metrics with no value on some snapshots: drift needs a previous snapshot, agreement annotators.
SOMETIMES_ABSENT = {"label_linf", "length_js_distance", "median_length_change", "new_rows",
                    "oov_rate", "annotation_consistency", "annotation_alpha"}


class QualityGateFailed(RuntimeError):
    """A critical expectation failed: the snapshot must not be trained on."""


class SuiteError(ValueError):
    """An expectation suite in ``expectations/`` that the gate cannot run as written."""


def check_suites(expectations_path: str | Path) -> None:
    """Load and check every suite (:func:`load_suite_json`): run before any work starts, so a
    broken suite stops a run at once, not after hours of curation."""
    for name in SUITES:
        load_suite_json(expectations_path, name)


def load_suite_json(expectations_path: str | Path, name: str) -> dict[str, Any]:
    """Read one suite's JSON from the expectations folder and check it (:func:`check_suite`)."""
    path = Path(expectations_path) / f"{name}.json"
    if not path.is_file():
        raise SuiteError(f"expectation suite {path} is missing; expectations_path in the "
                         "config must point at a folder holding "
                         f"{', '.join(s + '.json' for s in SUITES)} (the project's expectations/)")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SuiteError(f"expectation suite {path} is not valid JSON: {err.msg} at line "
                         f"{err.lineno}, column {err.colno}; fix the file (git diff shows what "
                         "changed) and run again") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SuiteError(f"expectation suite {path} cannot be read: {err}") from None
    check_suite(suite, path, row_level=name == ROW_SUITE)
    return suite


def check_suite(suite: dict[str, Any], path: Path, row_level: bool) -> None:
    """Refuse what the gate would get wrong or fail on late: a malformed suite, an unknown
    expectation or arguments it does not take, an unknown severity, or, in the row suite
    (validated partition by partition), an expectation whose result is not a sum over rows."""
    if not (isinstance(suite, dict) and isinstance(suite.get("name"), str)
            and isinstance(suite.get("expectations"), list)):
        raise SuiteError(f"{path}: a suite is a JSON object with a \"name\" and a list of "
                         "\"expectations\"")
    for number, expectation in enumerate(suite["expectations"], start=1):
        kind = check_expectation(expectation, f"{path}: expectation {number}")
        severity = (expectation.get("meta") or {}).get("severity", "critical")
        if severity not in SEVERITIES:
            raise SuiteError(f"{path}: {kind} has severity {severity!r}; use one of "
                             f"{', '.join(SEVERITIES)} in its meta")
        if row_level and not is_row_expectation(kind):
            raise SuiteError(
                f"{path}: {kind} is not a per-row expectation, so it cannot be combined over "
                "partitions; put checks on aggregates (means, counts, uniqueness) in "
                "curated_dataset.json, on a scorecard metric")


def check_expectation(expectation: Any, where: str) -> str:
    """The expectation's type, once GX accepts it (a known type, with arguments it takes).

    Built directly: an ``ExpectationSuite`` only logs an unknown type, and drops it silently.
    """
    from great_expectations.exceptions import GreatExpectationsError
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    if not (isinstance(expectation, dict) and isinstance(expectation.get("type"), str)
            and isinstance(expectation.get("kwargs"), dict)):
        raise SuiteError(f"{where} needs a \"type\" (string) and \"kwargs\" (object), got "
                         f"{json.dumps(expectation)[:200]}")
    try:
        ExpectationConfiguration(**expectation).to_domain_obj()
    except (GreatExpectationsError, ValueError, TypeError) as err:
        detail = " ".join(str(err).split())[:300]
        raise SuiteError(f"{where} ({expectation['type']}) is not valid: {detail}") from None
    return expectation["type"]


def is_row_expectation(kind: str) -> bool:
    """Whether an expectation counts unexpected rows one by one (so partition counts add up)."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    if "unique" in kind:  # a map expectation, but its verdict spans rows of all partitions
        return False
    return issubclass(get_expectation_impl(kind), (ColumnMapExpectation, ColumnPairMapExpectation,
                                                   MulticolumnMapExpectation))


def one_row_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """The scalar metrics of a dict as one row, for dataset-level expectations."""
    return pd.DataFrame([{k: v for k, v in metrics.items()
                          if isinstance(v, int | float) and not isinstance(v, bool)}])


def applicable(suite_json: dict[str, Any], columns: list[str],
               ) -> tuple[dict[str, Any], list[str]]:
    """The suite without expectations on metrics this snapshot has no value for (drift on the
    first snapshot, agreement without annotators), and what was skipped.

    A column that is no metric at all is a mistake in the suite, not a skip: it is refused.
    """
    kept, skipped = [], []
    for expectation in suite_json["expectations"]:
        column = expectation["kwargs"].get("column")
        if column is None or column in columns:
            kept.append(expectation)
        elif column in SOMETIMES_ABSENT:
            skipped.append(f"{suite_json['name']}: {expectation['type']}(column={column}) "
                           "skipped: metric not available for this snapshot")
        else:
            raise SuiteError(f"{suite_json['name']}: {expectation['type']} checks column "
                             f"{column!r}, which is not a metric; available: "
                             f"{', '.join(sorted({*columns, *SOMETIMES_ABSENT}))}")
    return {**suite_json, "expectations": kept}, skipped


def _suite(context: Any, suite_json: dict[str, Any]) -> Any:
    from great_expectations.core.expectation_suite import ExpectationSuite

    return context.suites.add_or_update(ExpectationSuite(**suite_json))


def _validation_definition(context: Any, suite: Any, name: str) -> Any:
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas("finegate")
    asset = next((a for a in source.assets if a.name == name), None) or \
        source.add_dataframe_asset(name)
    batch = next((b for b in asset.batch_definitions if b.name == name), None) or \
        asset.add_batch_definition_whole_dataframe(name)
    return context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite))


def _gx_context(root: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = (gx.get_context(mode="file", project_root_dir=str(root)) if root
               else gx.get_context(mode="ephemeral"))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


_local = threading.local()
# GX's expectation-parameter parser is not thread-safe: one validation at a time per process
# (workers are processes, so partitions still validate in parallel across the cluster).
_gx_lock = threading.Lock()


def _worker_context() -> Any:
    # One ephemeral GX context per worker thread: each new one creates a temporary docs site,
    # and a context is not safe to share between threads.
    if not hasattr(_local, "context"):
        _local.context = _gx_context(None)
    return _local.context


def validate_partition(path: str, suite_json: dict[str, Any], parameters: dict[str, Any]) -> Any:
    """Validate one Parquet partition against a row suite (runs on a Dask worker)."""
    import pyarrow.parquet as pq

    frame = pq.read_table(path, columns=ROW_COLUMNS).to_pandas()
    with _gx_lock:
        context = _worker_context()
        definition = _validation_definition(context, _suite(context, suite_json),
                                            suite_json["name"])
        return definition.run(batch_parameters={"dataframe": frame},
                              expectation_parameters=parameters, result_format="SUMMARY")


def combine_partition_results(parts: list[Any]) -> Any:
    """One suite result from per-partition results: counts summed, success re-decided."""
    combined = parts[0]
    for index, result in enumerate(combined.results):
        details = result.result
        for key in SUMMED:
            if key in details:
                details[key] = sum(p.results[index].result.get(key, 0) for p in parts)
        details["partial_unexpected_list"] = [
            v for p in parts for v in p.results[index].result.get("partial_unexpected_list", [])
        ][:20]
        if "partial_unexpected_counts" in details:
            counts: dict[str, int] = {}
            for p in parts:
                for item in p.results[index].result.get("partial_unexpected_counts", []):
                    key = json.dumps(item["value"], default=str)
                    counts[key] = counts.get(key, 0) + item["count"]
            details["partial_unexpected_counts"] = [
                {"value": json.loads(k), "count": n}
                for k, n in sorted(counts.items(), key=lambda kv: -kv[1])][:20]
        if "unexpected_count" in details:
            total = details["element_count"]
            checked = total - details.get("missing_count", 0)
            share = details["unexpected_count"] / checked if checked else 0.0
            details["unexpected_percent"] = details["unexpected_percent_nonmissing"] = 100 * share
            details["unexpected_percent_total"] = (100 * details["unexpected_count"] / total
                                                   if total else 0.0)
            details["missing_percent"] = (100 * details.get("missing_count", 0) / total
                                          if total else 0.0)
            mostly = result.expectation_config.kwargs.get("mostly", 1.0)
            result.success = share <= 1 - mostly + 1e-12
        else:
            result.success = all(p.results[index].success for p in parts)
        result.exception_info = next(
            (p.results[index].exception_info for p in parts
             if p.results[index].exception_info.get("raised_exception")), result.exception_info)
    combined.success = all(r.success for r in combined.results)
    evaluated, successful = len(combined.results), sum(r.success for r in combined.results)
    combined.statistics.update({"evaluated_expectations": evaluated,
                                "successful_expectations": successful,
                                "unsuccessful_expectations": evaluated - successful,
                                "success_percent": 100 * successful / max(evaluated, 1)})
    return combined


def validate_rows(data_path: str | Path, suite_json: dict[str, Any],
                  parameters: dict[str, Any]) -> Any:
    """Row suite over all partitions in parallel (on the current Dask client, if any)."""
    import dask

    files = sorted(str(f) for f in Path(data_path).glob("*.parquet"))
    parts = dask.compute(*[dask.delayed(validate_partition)(f, suite_json, parameters)
                           for f in files])
    return combine_partition_results(list(parts))


def store_result(context: Any, suite_json: dict[str, Any], result: Any, run_name: str,
                 batch: str) -> None:
    """Keep a (combined) suite result in the GX context, so Data Docs show it."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    suite_id = ExpectationSuiteIdentifier(name=suite_json["name"])
    _suite(context, suite_json)
    context.validation_results_store.store_validation_results(
        suite_validation_result=result,
        suite_validation_result_identifier=ValidationResultIdentifier(
            expectation_suite_identifier=suite_id, run_id=RunIdentifier(run_name=run_name),
            batch_identifier=batch),
        expectation_suite_identifier=suite_id,
    )


def validate_frame(context: Any, suite_json: dict[str, Any], frame: pd.DataFrame,
                   parameters: dict[str, Any]) -> Any:
    """Validate an in-memory frame (dataset and drift suites) in the file context."""
    definition = _validation_definition(context, _suite(context, suite_json), suite_json["name"])
    return definition.run(batch_parameters={"dataframe": frame},
                          expectation_parameters=parameters, result_format="SUMMARY")


def describe(result: Any, suite: str) -> dict[str, Any]:
    """One expectation result as a small JSON-able record with a readable message."""
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    meta = config.meta or {}
    details = result.result or {}
    if details.get("element_count") == 1 and "partial_unexpected_list" in details:
        found = details["partial_unexpected_list"][0] if details["partial_unexpected_list"] \
            else "within bounds"  # a one-row metric frame: show the metric's value
    elif "unexpected_count" in details:
        found = (f"{details['unexpected_count']} of {details.get('element_count')} rows "
                 f"unexpected, e.g. {details.get('partial_unexpected_list', [])[:3]}")
    else:
        found = details.get("observed_value")
    if (result.exception_info or {}).get("raised_exception"):
        found = f"error: {result.exception_info.get('exception_message')}"
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    note = f" ({meta['note']})" if meta.get("note") else ""
    return {"suite": suite, "expectation": config.type, "kwargs": kwargs,
            "severity": meta.get("severity", "critical"), "success": bool(result.success),
            "found": found, "message": f"{suite}: {config.type}({args}){note} found {found}"}


def gate(outcomes: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Messages of failed critical and failed warning expectations."""
    failed = [o for o in outcomes if not o["success"]]
    return ([o["message"] for o in failed if o["severity"] == "critical"],
            [o["message"] for o in failed if o["severity"] != "critical"])


def failure_paragraph(failures: list[str], warnings: list[str]) -> str:
    """The one-paragraph reason a gate failed."""
    return (f"The quality gate stopped the run before training: {len(failures)} critical "
            f"expectation(s) failed — " + "; ".join(failures) + "."
            + (f" Also {len(warnings)} warning(s)." if warnings else ""))


def run_gate(data_path: str, scorecard_path: str, out_dir: Path, *, expectations_path: str,
             labels: list[str], gx_root: Path, run_name: str = "manual") -> GateResult:
    """Run the three suites, write ``gate.json`` and Data Docs to ``out_dir``; raise
    :class:`QualityGateFailed` on a critical failure."""
    scorecard = read_json(Path(scorecard_path))
    context = _gx_context(gx_root)
    parameters = {"label_set": labels, "label_count": len(labels)}
    batch = f"snapshot-{scorecard.get('snapshot', '')[:16]}"
    outcomes: list[dict[str, Any]] = []
    skipped: list[str] = []

    rows_suite = load_suite_json(expectations_path, ROW_SUITE)
    rows_result = validate_rows(data_path, rows_suite, parameters)
    store_result(context, rows_suite, rows_result, run_name, batch)
    outcomes += [describe(r, ROW_SUITE) for r in rows_result.results]
    for name, metrics in ((DATASET_SUITE, scorecard), (DRIFT_SUITE, scorecard.get("drift", {}))):
        frame = one_row_frame(metrics)
        suite_json, missing = applicable(load_suite_json(expectations_path, name),
                                         list(frame.columns))
        skipped += missing
        result = validate_frame(context, suite_json, frame, parameters)
        store_result(context, suite_json, result, run_name, batch)
        outcomes += [describe(r, name) for r in result.results]

    context.build_data_docs()
    docs = out_dir / "data_docs"
    shutil.copytree(gx_root / "gx" / "uncommitted" / "data_docs" / "local_site", docs,
                    dirs_exist_ok=True)
    failures, warnings = gate(outcomes)
    reason = failure_paragraph(failures, warnings) if failures else ""
    path = write_json(out_dir / "gate.json", {
        "passed": not failures, "reason": reason, "failures": failures, "warnings": warnings,
        "skipped": skipped, "expectations": outcomes, "data_docs": str(docs / "index.html")})
    if failures:
        raise QualityGateFailed(f"{reason}\nDetails: {path}; Data Docs: {docs / 'index.html'}")
    return GateResult(passed=True, gate_path=str(path), data_docs=str(docs / "index.html"),
                      failures=failures, warnings=warnings, skipped=skipped)
