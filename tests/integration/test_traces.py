"""Traces out, against a real OTLP/HTTP receiver: finished runs leave as spans through the
official exporter, one trace per item and one span per run, once, and a collector that is away
only delays them."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from api.container import Container
from api.routes.health import _gather
from api.routes.log import projection_statuses
from api.settings import Settings
from domain.application import utc_now
from domain.values import By, Claimant, Completion, Failure, NewItem, Report
from projections.traces import span_id_of
from tests.live import free_port
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")
AGENT = By("agent:writer", "t")
WRITER = Claimant("writer", frozenset({"draft", "edit"}))
SPEC = {
    "stages": [
        {"name": "draft", "retry_backoff_seconds": 0},
        {"name": "edit", "retry_backoff_seconds": 0},
    ],
    "max_visits_per_stage": 3,
}
TOOL_CALLS = [
    {
        "name": "web.search",
        "input": {"q": "agents"},
        "output": {"hits": 3},
        "started_at": "2026-01-02T03:04:05.000001+00:00",
        "duration_ms": 12.5,
    },
    {
        "name": "style.check",
        "input": "draft",
        "output": None,
        "error": "TimeoutError: no answer",
        "started_at": "2026-01-02T03:04:06+00:00",
        "duration_ms": 30.0,
    },
]


class Clock:
    """The service's clock, moved on by the test so a lease expires without waiting for it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utc_now() + self.offset


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def exporting(settings: Settings, port: int, clock: Clock) -> Iterator[Container]:
    """A process running projections, the bus and the trace exporter, told of a collector on
    `port` where nothing listens yet."""
    configured = settings.model_copy(
        update={
            "otlp_endpoint": f"http://127.0.0.1:{port}",
            "otlp_timeout_seconds": 0.5,
            "sweep_interval_seconds": 0.1,
        }
    )
    container = Container(configured, clock).start(projections=True, bus=True)
    try:
        yield container
    finally:
        container.close()


def _ready(container: Container, item_id: uuid.UUID, stage: str) -> bool:
    item = container.app.item(item_id)
    return item.status == "ready" and item.stage == stage


def _claim(container: Container, item_id: uuid.UUID, stage: str) -> str:
    wait_until(lambda: _ready(container, item_id, stage), f"{stage} ready")
    _, lease_id, _ = container.app.claim(item_id, stage, WRITER, AGENT)
    return lease_id


def _work(container: Container, clock: Clock) -> tuple[uuid.UUID, uuid.UUID, dict[str, str]]:
    """Two items: one with a completed draft (tool calls, a model), a failed edit and a
    completed retry; the other with a draft whose lease expired. Returns the lease ids by run."""
    app = container.app
    app.put_pipeline("p", SPEC, OPS)
    first, _ = app.create_item(NewItem("p", "t", "first", {}), OPS)
    second, _ = app.create_item(NewItem("p", "t", "second", {}), OPS)
    leases = {"draft": _claim(container, first.id, "draft")}
    report = Report(Decimal("0.0125"), 900, 300, 1500, {"tool_calls": TOOL_CALLS}, "m-large")
    app.complete_stage(leases["draft"], WRITER, Completion({"text": "…"}, None, report), AGENT)
    leases["edit-1"] = _claim(container, first.id, "edit")
    failed = Report(Decimal("0.002"), 100, 0, 200, {"model": "m-small"})
    app.fail_stage(leases["edit-1"], WRITER, Failure("rate limited", True, failed), AGENT)
    leases["edit-2"] = _claim(container, first.id, "edit")
    app.complete_stage(leases["edit-2"], WRITER, Completion("ok", "done"), AGENT)
    leases["expired"] = _claim(container, second.id, "draft")
    clock.offset = timedelta(hours=1)  # past the lease: the sweeper expires it
    wait_until(lambda: app.item(second.id).status == "ready", "the expired draft retried")
    return first.id, second.id, leases


def _traces_status(container: Container) -> dict[str, Any]:
    return next(s for s in projection_statuses(container) if s["name"] == "traces")


def _metric(text: str, line_start: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(line_start))
    return float(line.rsplit(" ", 1)[1])


def _by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.attributes["stateowner.lease_id"] + "/" + span.name: span for span in spans}


def test_runs_wait_for_an_absent_collector_then_leave_once_as_spans(
    exporting: Container, port: int, clock: Clock
) -> None:
    """With nothing listening, finished runs stay unexported and the lag shows in
    /v1/projections and metrics while the service stays ready; once a receiver listens, each
    run arrives as one span in its item's trace, tool calls as its children, and none twice."""
    container = exporting
    first, second, leases = _work(container, clock)
    follower = container.follower("traces")
    assert follower is not None
    wait_until(lambda: follower.state.failures >= 1, "a failed export")
    status = _traces_status(container)
    assert status["lag"] > 0
    assert status["error"] is not None
    assert "did not accept" in status["error"]
    metrics = _gather(container, 0).decode()
    assert _metric(metrics, 'stateowner_follower_lag{follower="traces"}') > 0
    assert _metric(metrics, "stateowner_spans_exported_total") == 0
    assert follower.required is False

    receiver = OtlpReceiver(port).start()
    try:
        head = container.app.position()
        wait_until(lambda: _traces_status(container)["lag"] == 0, "the exporter to catch up")
        assert container.traces is not None
        assert container.traces.position() >= head
        spans = receiver.spans()
    finally:
        receiver.stop()

    # Once: every span id arrives exactly once, six spans in all.
    assert Counter(span.span_id for span in spans).most_common(1)[0][1] == 1
    runs = [span for span in spans if span.parent_span_id == ""]
    tools = [span for span in spans if span.parent_span_id != ""]
    assert len(runs) == 4
    assert len(tools) == 2
    assert {span.trace_id for span in spans} == {first.hex, second.hex}
    assert all(span.resource["service.name"] == "stateowner" for span in spans)
    assert all(span.scope == "stateowner" for span in spans)

    by_lease = {span.attributes["stateowner.lease_id"]: span for span in runs}
    draft = by_lease[leases["draft"]]
    assert draft.name == "invoke_agent draft"
    assert draft.trace_id == first.hex
    assert draft.span_id == f"{span_id_of('run', leases['draft']):016x}"
    assert draft.attributes == {
        "stateowner.item_id": str(first),
        "stateowner.stage": "draft",
        "stateowner.attempt": 1,
        "stateowner.agent": "writer",
        "stateowner.lease_id": leases["draft"],
        "stateowner.result": "completed",
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "writer",
        "gen_ai.request.model": "m-large",
        "gen_ai.response.model": "m-large",
        "gen_ai.usage.input_tokens": 900,
        "gen_ai.usage.output_tokens": 300,
        "stateowner.cost_usd": 0.0125,
        "stateowner.duration_ms": 1500,
    }
    assert draft.status_code == 1  # OK
    assert draft.start_ns < draft.end_ns

    failed = by_lease[leases["edit-1"]]
    assert failed.attributes["stateowner.result"] == "failed"
    assert failed.attributes["stateowner.error"] == "rate limited"
    assert failed.attributes["stateowner.retryable"] is True
    assert failed.attributes["gen_ai.request.model"] == "m-small"  # named in the trace
    assert (failed.status_code, failed.status_message) == (2, "rate limited")  # ERROR
    retried = by_lease[leases["edit-2"]]
    assert retried.attributes["stateowner.attempt"] == 2
    assert retried.attributes["stateowner.outcome"] == "done"
    assert "gen_ai.request.model" not in retried.attributes
    expired = by_lease[leases["expired"]]
    assert expired.trace_id == second.hex
    assert expired.attributes["stateowner.result"] == "expired"
    assert "gen_ai.usage.input_tokens" not in expired.attributes
    assert expired.status_code == 2

    search, check = sorted(tools, key=lambda span: span.start_ns)
    assert {search.parent_span_id, check.parent_span_id} == {draft.span_id}
    assert search.trace_id == first.hex
    assert search.name == "execute_tool web.search"
    assert search.attributes["gen_ai.tool.name"] == "web.search"
    assert search.attributes["gen_ai.tool.call.arguments"] == '{"q": "agents"}'
    assert search.attributes["gen_ai.tool.call.result"] == '{"hits": 3}'
    assert search.end_ns - search.start_ns == 12_500_000
    assert (
        search.start_ns
        == int(datetime.fromisoformat(TOOL_CALLS[0]["started_at"]).timestamp()) * 10**9 + 1000
    )
    assert (check.status_code, check.status_message) == (2, "TimeoutError: no answer")
    assert "gen_ai.tool.call.result" not in check.attributes

    status = _traces_status(container)
    assert status["error"] is None
    metrics = _gather(container, 0).decode()
    assert _metric(metrics, "stateowner_spans_exported_total") == 6
