"""Evaluation: what an eval case checks, whether an eval item's outcome passes its checks, how a
run sums up, and whether a version's results meet the active version's eval gate. Pure: the
JSON Schema engine is handed in by the caller (a function naming what is wrong, or None)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.errors import EvalGateRefused, InvalidEvalCase

CHECK_KINDS = ("contains", "regex", "json_schema", "max_cost_usd", "max_tokens", "score")
CASE_KEYS = {"name", "input", "stage", "checks"}
CHECK_KEYS = {"kind", "value", "stage"}
MAX_CASES = 100
MAX_CHECKS = 20
MAX_PATTERN = 1000
# Check kinds that read a stage's output; the others read what the whole item cost.
READS_OUTPUT = {"contains", "regex", "json_schema", "score"}

# A JSON Schema engine, handed in: what is wrong with a schema (None: it is valid) and what is
# wrong with a value under a valid schema (None: it conforms).
SchemaProblem = Callable[[Any], "str | None"]
SchemaViolation = Callable[[Any, Any], "str | None"]


@dataclass(frozen=True)
class Check:
    kind: str
    value: Any
    stage: str | None  # the stage whose output it reads; None for cost and tokens

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "stage": self.stage}


@dataclass(frozen=True)
class Case:
    name: str
    input: dict[str, Any]
    checks: tuple[Check, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input": self.input,
            "checks": [check.to_dict() for check in self.checks],
        }


def _number(value: Any, where: str, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvalCase(where, f"must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEvalCase(where, f"must be finite, got {value!r}")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise InvalidEvalCase(where, f"must be a whole number, got {value!r}")
        value = int(value)
    if value < 0:
        raise InvalidEvalCase(where, f"must not be negative, got {value!r}")
    number: float | int = value
    return number


def _check(
    raw: Any, where: str, stages: Sequence[str], default_stage: str, schema_problem: SchemaProblem
) -> Check:
    if not isinstance(raw, Mapping):
        raise InvalidEvalCase(where, "must be an object with a kind and a value")
    unknown = set(raw) - CHECK_KEYS
    if unknown:
        raise InvalidEvalCase(where, f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
    kind = raw.get("kind")
    if kind not in CHECK_KINDS:
        raise InvalidEvalCase(
            f"{where}.kind", f"must be one of {', '.join(CHECK_KINDS)}, got {kind!r}"
        )
    stage = raw.get("stage", default_stage)
    if stage not in stages:
        raise InvalidEvalCase(f"{where}.stage", f"the version has no stage named {stage!r}")
    if "value" not in raw:
        raise InvalidEvalCase(f"{where}.value", "is required")
    value = raw["value"]
    at = f"{where}.value"
    if kind == "contains":
        if not isinstance(value, str) or not value:
            raise InvalidEvalCase(at, "must be a non-empty string")
    elif kind == "regex":
        if not isinstance(value, str) or not value or len(value) > MAX_PATTERN:
            raise InvalidEvalCase(at, f"must be a pattern of 1 to {MAX_PATTERN} characters")
        try:
            re.compile(value)
        except re.error as error:
            raise InvalidEvalCase(at, f"is not a valid regular expression: {error}") from None
    elif kind == "json_schema":
        if not isinstance(value, Mapping | bool):
            raise InvalidEvalCase(at, "must be a JSON Schema (an object)")
        problem = schema_problem(value)
        if problem is not None:
            raise InvalidEvalCase(at, f"is not a valid JSON Schema: {problem}")
    elif kind == "max_tokens":
        value = _number(value, at, integer=True)
    else:  # max_cost_usd, score: a number
        value = _number(value, at)
    return Check(kind, value, stage if kind in READS_OUTPUT else None)


def parse_cases(
    raw: Any, stages: Sequence[str], schema_problem: SchemaProblem, *, max_cases: int = MAX_CASES
) -> tuple[Case, ...]:
    """Validate the cases of an eval run against a version's stages, naming what is wrong."""
    if not isinstance(raw, list) or not raw:
        raise InvalidEvalCase("cases", "must be a non-empty list")
    if len(raw) > max_cases:
        raise InvalidEvalCase("cases", f"has {len(raw)} cases; at most {max_cases}")
    cases = []
    for index, raw_case in enumerate(raw):
        where = f"cases[{index}]"
        if not isinstance(raw_case, Mapping):
            raise InvalidEvalCase(where, "must be an object")
        unknown = set(raw_case) - CASE_KEYS
        if unknown:
            raise InvalidEvalCase(where, f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
        name = raw_case.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidEvalCase(f"{where}.name", "must be a non-empty string of at most 200")
        case_input = raw_case.get("input", {})
        if not isinstance(case_input, dict):
            raise InvalidEvalCase(f"{where}.input", "must be an object")
        stage = raw_case.get("stage", stages[-1])
        if stage not in stages:
            raise InvalidEvalCase(f"{where}.stage", f"the version has no stage named {stage!r}")
        raw_checks = raw_case.get("checks", [])
        if not isinstance(raw_checks, list) or len(raw_checks) > MAX_CHECKS:
            raise InvalidEvalCase(f"{where}.checks", f"must be a list of at most {MAX_CHECKS}")
        checks = tuple(
            _check(c, f"{where}.checks[{i}]", stages, stage, schema_problem)
            for i, c in enumerate(raw_checks)
        )
        cases.append(Case(name, dict(case_input), checks))
    names = [case.name for case in cases]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidEvalCase("cases", f"case names must be unique: {', '.join(repeated)}")
    return tuple(cases)


# -- judging an eval item -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Where an eval item stands, as far as its checks care."""

    status: str  # the item's: ready, claimed, advancing, done, parked, halted, cancelled
    outputs: Mapping[str, Any]
    cost_usd: Decimal
    tokens: int
    detail: str = ""


@dataclass(frozen=True)
class CheckResult:
    kind: str
    stage: str | None
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stage": self.stage,
            "passed": self.passed,
            "detail": self.detail,
        }


RUNNING, PASSED, FAILED = "running", "passed", "failed"
# An item stopped here has failed its case: it did not finish its pipeline.
STOPPED_SHORT = {"parked", "halted", "cancelled"}


def as_text(output: Any) -> str:
    """What text checks read: a string output as it is, anything else as canonical JSON."""
    if isinstance(output, str):
        return output
    return json.dumps(output, sort_keys=True, ensure_ascii=False, default=str)


def run_check(check: Check, outcome: Outcome, schema_violation: SchemaViolation) -> CheckResult:
    """One check on a finished eval item."""

    def result(passed: bool, detail: str) -> CheckResult:
        return CheckResult(check.kind, check.stage, passed, detail)

    if check.kind == "max_cost_usd":
        ok = outcome.cost_usd <= Decimal(str(check.value))
        return result(ok, f"cost {outcome.cost_usd} USD, at most {check.value}")
    if check.kind == "max_tokens":
        return result(
            outcome.tokens <= check.value, f"{outcome.tokens} tokens, at most {check.value}"
        )
    assert check.stage is not None
    if check.stage not in outcome.outputs:
        return result(False, f"stage {check.stage!r} has no output")
    output = outcome.outputs[check.stage]
    if check.kind == "contains":
        ok = check.value in as_text(output)
        return result(ok, f"{'contains' if ok else 'does not contain'} {check.value!r}")
    if check.kind == "regex":
        ok = re.search(check.value, as_text(output)) is not None
        return result(ok, f"{'matches' if ok else 'does not match'} /{check.value}/")
    if check.kind == "json_schema":
        violation = schema_violation(check.value, output)
        return result(violation is None, violation or "conforms to the schema")
    score = output.get("score") if isinstance(output, Mapping) else None
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return result(False, f'stage {check.stage!r} returned no numeric {{"score": x}}')
    return result(score >= check.value, f"score {score}, at least {check.value}")


@dataclass(frozen=True)
class CaseResult:
    status: str  # running, passed, failed
    detail: str
    checks: tuple[CheckResult, ...]


def judge(case: Case, outcome: Outcome, schema_violation: SchemaViolation) -> CaseResult:
    """A case passes when its item is done and every check holds; an item stopped short
    (parked, halted, cancelled) fails it; anything else is still running."""
    if outcome.status in STOPPED_SHORT:
        detail = f"the item is {outcome.status}" + (f": {outcome.detail}" if outcome.detail else "")
        return CaseResult(FAILED, detail, ())
    if outcome.status != "done":
        return CaseResult(RUNNING, f"the item is {outcome.status}", ())
    results = tuple(run_check(check, outcome, schema_violation) for check in case.checks)
    failed = [r for r in results if not r.passed]
    if failed:
        return CaseResult(FAILED, f"{len(failed)} of {len(results)} checks failed", results)
    return CaseResult(PASSED, f"{len(results)} checks passed", results)


def case_from_dict(raw: Mapping[str, Any]) -> Case:
    """A case as stored on its run's start (validated then)."""
    return Case(
        raw["name"],
        dict(raw.get("input", {})),
        tuple(Check(c["kind"], c["value"], c.get("stage")) for c in raw.get("checks", ())),
    )


# -- a run's summary and the gate ------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    version: int
    finished: bool
    passed: int
    failed: int
    total: int
    cost_usd: Decimal

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def cost_per_item_usd(self) -> float:
        return float(self.cost_usd / self.total) if self.total else 0.0


def summarize(
    run_id: str, version: int, results: Sequence[CaseResult], costs: Sequence[Decimal]
) -> RunSummary:
    passed = sum(1 for r in results if r.status == PASSED)
    failed = sum(1 for r in results if r.status == FAILED)
    return RunSummary(
        run_id,
        version,
        finished=passed + failed == len(results),
        passed=passed,
        failed=failed,
        total=len(results),
        cost_usd=sum(costs, Decimal(0)),
    )


@dataclass(frozen=True)
class EvalGate:
    """How far a new version may fall behind the active one: its pass rate by `tolerance`, its
    cost per item to `max_cost_ratio` times the active's (None: cost is not compared)."""

    tolerance: float = 0.0
    max_cost_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "max_cost_ratio": self.max_cost_ratio}


def gate_refusal(
    gate: EvalGate, candidate: RunSummary | None, active: RunSummary | None
) -> str | None:
    """Why the candidate's latest finished run does not meet the gate (None: it does)."""
    if candidate is None:
        return "the version has no finished eval run"
    if active is None:
        return "the active version has no finished eval run to compare with"
    floor = active.pass_rate - gate.tolerance
    if candidate.pass_rate + 1e-9 < floor:
        return (
            f"pass rate {candidate.pass_rate:.3f} (run {candidate.run_id}) is below the active "
            f"version {active.version}'s {active.pass_rate:.3f} less tolerance {gate.tolerance}"
        )
    if gate.max_cost_ratio is not None:
        ceiling = active.cost_per_item_usd * gate.max_cost_ratio
        if candidate.cost_per_item_usd > ceiling + 1e-12:
            return (
                f"cost per item {candidate.cost_per_item_usd:.6f} USD (run {candidate.run_id}) is "
                f"above the active version {active.version}'s {active.cost_per_item_usd:.6f} USD "
                f"times {gate.max_cost_ratio}"
            )
    return None


def check_gate(gate: EvalGate, candidate: RunSummary | None, active: RunSummary | None) -> None:
    refusal = gate_refusal(gate, candidate, active)
    if refusal is not None:
        raise EvalGateRefused(refusal)


def parse_gate(raw: Any) -> EvalGate:
    """A spec's `eval_gate`: {tolerance (0..1, default 0), max_cost_ratio (> 0, optional)}."""
    if not isinstance(raw, Mapping):
        raise InvalidEvalCase("eval_gate", "must be an object")
    unknown = set(raw) - {"tolerance", "max_cost_ratio"}
    if unknown:
        raise InvalidEvalCase("eval_gate", f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
    tolerance = float(_number(raw.get("tolerance", 0), "eval_gate.tolerance"))
    if tolerance > 1:
        raise InvalidEvalCase("eval_gate.tolerance", f"must be at most 1, got {tolerance!r}")
    ratio = raw.get("max_cost_ratio")
    if ratio is not None:
        ratio = float(_number(ratio, "eval_gate.max_cost_ratio"))
        if ratio <= 0 or ratio > 1000:
            raise InvalidEvalCase(
                "eval_gate.max_cost_ratio", f"must be in (0, 1000], got {ratio!r}"
            )
    return EvalGate(tolerance, ratio)
