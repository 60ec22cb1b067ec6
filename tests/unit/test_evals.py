"""Unit tests of evaluation's pure parts: parsing cases, running checks, judging a case, summing
a run up, and the eval gate."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.activation import Activation
from domain.errors import EvalGateRefused, InvalidEvalCase, InvalidPipelineSpec
from domain.evals import (
    FAILED,
    PASSED,
    RUNNING,
    Case,
    Check,
    EvalGate,
    Outcome,
    RunSummary,
    gate_refusal,
    judge,
    parse_cases,
    run_check,
    summarize,
)
from domain.pipeline import parse_spec
from domain.values import By

pytestmark = pytest.mark.unit

STAGES = ["draft", "score"]
BY = By("admin:builtin", "test")


def no_schema_problem(schema: Any) -> str | None:
    return None if isinstance(schema, dict) and schema.get("type") != "bogus" else "bad type"


def object_with_title(schema: Any, value: Any) -> str | None:
    return None if isinstance(value, dict) and "title" in value else "'title' is required"


def parse(cases: Any) -> tuple[Case, ...]:
    return parse_cases(cases, STAGES, no_schema_problem)


def test_checks_read_the_last_stage_unless_a_case_or_check_names_another() -> None:
    """A case's checks default to its own stage, which defaults to the pipeline's last."""
    (first, second) = parse(
        [
            {"name": "a", "checks": [{"kind": "contains", "value": "x"}]},
            {
                "name": "b",
                "stage": "draft",
                "checks": [
                    {"kind": "regex", "value": "^x"},
                    {"kind": "score", "value": 0.5, "stage": "score"},
                    {"kind": "max_tokens", "value": 10.0},
                ],
            },
        ]
    )
    assert first.checks == (Check("contains", "x", "score"),)
    assert [c.stage for c in second.checks] == ["draft", "score", None]
    assert second.checks[2].value == 10


@pytest.mark.parametrize(
    ("cases", "location"),
    [
        ([{"name": "a", "checks": [{"kind": "looks_good", "value": 1}]}], "cases[0].checks[0].kind"),
        ([{"name": "a", "checks": [{"kind": "regex", "value": "(unclosed"}]}], "cases[0].checks[0].value"),
        ([{"name": "a", "checks": [{"kind": "json_schema", "value": {"type": "bogus"}}]}], "cases[0].checks[0].value"),
        ([{"name": "a", "checks": [{"kind": "max_cost_usd", "value": -1}]}], "cases[0].checks[0].value"),
        ([{"name": "a", "checks": [{"kind": "contains"}]}], "cases[0].checks[0].value"),
        ([{"name": "a", "stage": "publish"}], "cases[0].stage"),
        ([{"name": "a"}, {"name": "a"}], "cases"),
        ([], "cases"),
    ],
)  # fmt: skip
def test_bad_cases_are_refused_naming_where(cases: Any, location: str) -> None:
    with pytest.raises(InvalidEvalCase) as refused:
        parse(cases)
    assert refused.value.location == location


def outcome(status: str = "done", **outputs: Any) -> Outcome:
    return Outcome(status, outputs, Decimal("0.02"), 150)


def test_each_check_kind() -> None:
    done = outcome(draft="The LLM costs fell", score={"score": 0.8})

    def holds(kind: str, value: Any, stage: str | None = "draft") -> bool:
        return run_check(Check(kind, value, stage), done, object_with_title).passed

    assert (holds("contains", "LLM"), holds("contains", "GPU")) == (True, False)
    assert (holds("regex", r"costs\s+fell$"), holds("regex", "^costs")) == (True, False)
    assert (holds("score", 0.8, "score"), holds("score", 0.9, "score")) == (True, False)
    assert not holds("score", 0.1, "draft")  # a text output has no score
    assert (holds("max_cost_usd", 0.02, None), holds("max_cost_usd", 0.01, None)) == (True, False)
    assert (holds("max_tokens", 150, None), holds("max_tokens", 149, None)) == (True, False)
    assert not holds("json_schema", {"required": ["title"]})
    assert run_check(
        Check("json_schema", {}, "draft"), outcome(draft={"title": "t"}), object_with_title
    ).passed


def test_a_case_passes_only_when_done_and_every_check_holds() -> None:
    case = Case("c", {}, (Check("contains", "fell", "draft"),))
    assert judge(case, outcome(draft="costs fell"), object_with_title).status == PASSED
    assert judge(case, outcome(draft="costs rose"), object_with_title).status == FAILED
    assert judge(case, outcome("claimed"), object_with_title).status == RUNNING
    parked = judge(case, Outcome("parked", {}, Decimal(0), 0, "retries"), object_with_title)
    assert (parked.status, parked.detail) == (FAILED, "the item is parked: retries")


def test_a_run_is_finished_once_no_case_runs() -> None:
    results = [judge(Case("c", {}, ()), outcome(s), object_with_title) for s in ("done", "parked")]
    summary = summarize("r", 2, results, [Decimal("0.5"), Decimal("0.1")])
    assert (summary.finished, summary.passed, summary.failed) == (True, 1, 1)
    assert summary.pass_rate == 0.5
    assert summary.cost_per_item_usd == pytest.approx(0.3)
    running = summarize("r", 2, [judge(Case("c", {}, ()), outcome("ready"), object_with_title)], [])
    assert not running.finished


def run(version: int, passed: int, total: int, cost: str) -> RunSummary:
    return RunSummary(f"run{version}", version, True, passed, total - passed, total, Decimal(cost))


def test_the_gate_compares_pass_rate_within_tolerance_and_cost_by_ratio() -> None:
    gate = EvalGate(tolerance=0.1, max_cost_ratio=1.5)
    active = run(1, 8, 10, "1.0")
    assert gate_refusal(gate, run(2, 7, 10, "1.5"), active) is None
    assert "pass rate" in (gate_refusal(gate, run(2, 6, 10, "1.0"), active) or "")
    assert "cost per item" in (gate_refusal(gate, run(2, 9, 10, "1.6"), active) or "")
    assert "no finished eval run" in (gate_refusal(gate, None, active) or "")
    assert "active version" in (gate_refusal(gate, active, None) or "")
    assert gate_refusal(EvalGate(), run(2, 8, 10, "99"), active) is None  # cost not compared


def test_activation_through_the_gate_or_forced() -> None:
    activation = Activation.begin("p", BY)
    gate = EvalGate(tolerance=0.0)
    with pytest.raises(EvalGateRefused):
        activation.activate(2, 1, gate, run(2, 1, 2, "0"), run(1, 2, 2, "0"), force=False, by=BY)
    assert activation.activate(2, 1, gate, None, None, force=True, by=BY)
    assert activation.active_version == 2
    assert not activation.activate(2, 2, gate, None, None, force=False, by=BY)
    last = activation.pending_events[-1]
    assert (last.how, last.previous) == ("forced", 1)  # type: ignore[attr-defined]


def test_a_spec_may_carry_an_eval_gate() -> None:
    spec = parse_spec({"stages": [{"name": "a"}], "eval_gate": {"tolerance": 0.05}})
    assert spec.eval_gate == EvalGate(0.05, None)
    assert "eval_gate" in spec.to_dict()
    assert "eval_gate" not in parse_spec({"stages": [{"name": "a"}]}).to_dict()
    with pytest.raises(InvalidPipelineSpec, match=r"eval_gate\.tolerance"):
        parse_spec({"stages": [{"name": "a"}], "eval_gate": {"tolerance": 2}})
