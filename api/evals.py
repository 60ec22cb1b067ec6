"""Eval runs as the API shows them: the evals projection's rows judged by the pure checks of
`domain.evals`, with JSON Schema checks run by `jsonschema` (Draft 2020-12)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.exceptions import SchemaError

from domain.evals import Outcome, RunSummary, case_from_dict, gate_refusal, judge, summarize
from domain.values import By
from projections.queries import Queries

if TYPE_CHECKING:
    from api.container import Container

SCHEMA_CLASS = jsonschema.Draft202012Validator
LATEST_RUNS_READ = 20


def schema_problem(schema: Any) -> str | None:
    """What makes `schema` no valid JSON Schema, or None."""
    try:
        SCHEMA_CLASS.check_schema(schema)
    except SchemaError as error:
        return str(error.message)
    return None


def schema_violation(schema: Any, value: Any) -> str | None:
    """Where `value` breaks `schema` first, or None when it conforms."""
    error = jsonschema.exceptions.best_match(SCHEMA_CLASS(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"at /{where}: {error.message}" if where else str(error.message)


def _case_body(row: dict[str, Any]) -> tuple[dict[str, Any], Any, Decimal]:
    case = case_from_dict({"name": row["name"], "checks": row["checks"]})
    outcome = Outcome(
        status=row["status"],
        outputs=row["outputs"],
        cost_usd=Decimal(row["cost_usd"]),
        tokens=int(row["tokens_in"]) + int(row["tokens_out"]),
        detail=row["detail"],
    )
    result = judge(case, outcome, schema_violation)
    body = {
        "name": row["name"],
        "item_id": str(row["item_id"]),
        "status": result.status,
        "item_status": row["status"] if row["status"] != "advancing" else "running",
        "detail": result.detail,
        "checks": [check.to_dict() for check in result.checks],
        "cost_usd": float(row["cost_usd"]),
        "tokens": {"in": row["tokens_in"], "out": row["tokens_out"]},
    }
    return body, result, Decimal(row["cost_usd"])


def run_summary(run: dict[str, Any]) -> tuple[RunSummary, list[dict[str, Any]]]:
    judged = [_case_body(row) for row in run["case_rows"]]
    summary = summarize(
        str(run["run_id"]),
        run["version"],
        [result for _, result, _ in judged],
        [cost for _, _, cost in judged],
    )
    return summary, [body for body, _, _ in judged]


def run_body(run: dict[str, Any], *, with_cases: bool = True) -> dict[str, Any]:
    summary, cases = run_summary(run)
    body: dict[str, Any] = {
        "id": str(run["run_id"]),
        "pipeline": run["pipeline"],
        "version": run["version"],
        "topic": run["topic"],
        "status": "finished" if summary.finished else "running",
        "total": summary.total,
        "passed": summary.passed,
        "failed": summary.failed,
        "pass_rate": summary.pass_rate,
        "cost_usd": float(summary.cost_usd),
        "cost_per_item_usd": summary.cost_per_item_usd,
        "started_by": run["started_by"],
        "started_at": run["started_at"],
        "position": run["position"],
    }
    if with_cases:
        body["cases"] = cases
    return body


def latest_finished(queries: Queries, pipeline: str, version: int) -> RunSummary | None:
    """The newest finished run of a version (runs still going are passed over)."""
    for run in queries.eval_runs(pipeline, version, limit=LATEST_RUNS_READ):
        summary, _ = run_summary(run)
        if summary.finished:
            return summary
    return None


def activate(container: Container, name: str, version: int, force: bool, by: By) -> dict[str, Any]:
    """Activate a version, judged on the latest finished runs of it and of the active version
    as the evals projection has them."""
    app = container.app
    pipeline, current = app.active_version(name)
    app.pipeline_version(pipeline, version)
    candidate = latest_finished(container.queries, name, version)
    active_run = latest_finished(container.queries, name, current)
    active, position, changed = app.activate_version(
        name,
        version,
        expected_active=current,
        candidate=candidate,
        active_run=active_run,
        force=force,
        by=by,
    )
    return {
        "name": name,
        "active_version": active,
        "changed": changed,
        "forced": changed and force,
        "position": position,
    }


def compared_with_active(container: Container, run: dict[str, Any]) -> dict[str, Any]:
    """The run beside the active version's latest finished run, and what the active version's
    eval gate would say of it (None while the run goes on, or without a gate)."""
    app = container.app
    pipeline, active = app.active_version(run["pipeline"])
    summary, _ = run_summary(run)
    baseline = latest_finished(container.queries, run["pipeline"], active)
    gate = app.pipeline_version(pipeline, active).parsed.eval_gate
    refusal = gate_refusal(gate, summary, baseline) if gate and summary.finished else None
    return {
        "active_version": active,
        "active_run": None if baseline is None else baseline.run_id,
        "pass_rate": None if baseline is None else baseline.pass_rate,
        "cost_per_item_usd": None if baseline is None else baseline.cost_per_item_usd,
        "eval_gate": None if gate is None else gate.to_dict(),
        "meets_gate": None if gate is None or not summary.finished else refusal is None,
        "refusal": refusal,
    }
