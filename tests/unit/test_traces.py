"""The spans a finished run becomes, built from its events alone: the same ids every time, so an
export repeated after a crash is a duplicate, never a second run."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource

from domain.application import StateOwner
from domain.item import Item
from domain.values import By, Claimant, Completion, NewItem, Report
from projections.traces import OpenRun, run_spans, traces_url, unclaimed_run

pytestmark = pytest.mark.unit

OPS = By("operator:ops", "r")
WRITER = By("agent:writer", "r")
HOLDER = Claimant("writer", frozenset({"draft"}))
RESOURCE = Resource({"service.name": "stateowner"})


@pytest.fixture
def app() -> Iterator[StateOwner]:
    application = StateOwner(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    application.put_pipeline("p", {"stages": [{"name": "draft"}]}, OPS)
    yield application
    application.close()


def _run(app: StateOwner, trace: Any) -> tuple[Any, Any]:
    item, _ = app.create_item(NewItem("p", "t", "x", {}), OPS)
    _, lease, _ = app.claim(item.id, "draft", HOLDER, WRITER)
    report = Report(Decimal("0.5"), 10, 20, 30, trace)
    app.complete_stage(lease, HOLDER, Completion("out", None, report), WRITER)
    events = list(app.events.get(item.id))
    claimed = next(e for e in events if isinstance(e, Item.StageClaimed))
    completed = next(e for e in events if isinstance(e, Item.StageCompleted))
    return claimed, completed


def _ids(spans: list[Any]) -> list[tuple[int, int, int | None]]:
    return [
        (s.context.trace_id, s.context.span_id, s.parent.span_id if s.parent else None)
        for s in spans
    ]


def test_a_run_is_the_same_spans_each_time_it_is_built(app: StateOwner) -> None:
    """Trace id from the item, span ids from the lease and the tool call's place: built twice,
    the spans have the same ids, so a re-export after a crash repeats, never adds."""
    claimed, completed = _run(app, {"tool_calls": [{"name": "a"}, {"name": "b"}]})
    first = run_spans(OpenRun.of(claimed), completed, RESOURCE)
    again = run_spans(OpenRun.of(claimed), completed, RESOURCE)
    assert _ids(first) == _ids(again)
    assert len(first) == 3
    assert {s.context.trace_id for s in first} == {claimed.originator_id.int}
    assert len({s.context.span_id for s in first}) == 3


def test_a_trace_the_sdk_did_not_write_still_makes_a_span(app: StateOwner) -> None:
    """A trace that is not a dict, or tool calls that are not dicts, give a run span without
    children; names, durations and times that do not parse fall back to the run's."""
    claimed, completed = _run(app, ["not", "a", "dict"])
    assert len(run_spans(OpenRun.of(claimed), completed, RESOURCE)) == 1
    claimed, completed = _run(
        app, {"tool_calls": ["x", {"name": 3, "started_at": "soon", "duration_ms": "long"}]}
    )
    run, tool = run_spans(OpenRun.of(claimed), completed, RESOURCE)
    assert tool.name == "execute_tool tool"
    assert tool.start_time == run.start_time
    assert tool.end_time == tool.start_time


def test_a_run_whose_claim_was_not_seen_begins_its_duration_before_its_end(
    app: StateOwner,
) -> None:
    """Without the claim, the span ends at the report and starts duration_ms before it."""
    _, completed = _run(app, None)
    (span,) = run_spans(unclaimed_run(completed), completed, RESOURCE)
    assert span.end_time is not None
    assert span.start_time == span.end_time - 30 * 1_000_000
    assert span.attributes is not None
    assert span.attributes["stateowner.attempt"] == 0


def test_the_traces_path_is_added_to_a_collector_base_url() -> None:
    """`http://host:4318` and `http://host:4318/v1/traces` name the same endpoint."""
    assert traces_url("http://otel:4318") == "http://otel:4318/v1/traces"
    assert traces_url("http://otel:4318/") == "http://otel:4318/v1/traces"
    assert traces_url("https://otel/v1/traces") == "https://otel/v1/traces"
