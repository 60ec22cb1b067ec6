"""The SDK against the HTTP contract, with no server: every route of the service's OpenAPI has a
method that sends exactly that request, problems become the exceptions their codes name, answers
with fields the SDK does not know still parse, and lists page until the service says stop."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

import stateowner_client as so
from api.app import create_app
from api.settings import Settings
from stateowner_client import AsyncClient, Client
from stateowner_client._sse import Decoder, Message, event_of

pytestmark = [pytest.mark.sdk, pytest.mark.unit]

# Every route of the service, and the method that calls it on Client and AsyncClient.
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/agents"): "create_agent",
    ("GET", "/v1/agents"): "list_agents",
    ("POST", "/v1/agents/{name}/rotate"): "rotate_token",
    ("PUT", "/v1/agents/{name}/stages"): "set_agent_stages",
    ("POST", "/v1/agents/{name}/disable"): "disable_agent",
    ("PUT", "/v1/agents/{name}/limits"): "set_agent_limits",
    ("PUT", "/v1/schedules/{name}"): "put_schedule",
    ("GET", "/v1/schedules"): "list_schedules",
    ("GET", "/v1/schedules/{name}"): "get_schedule",
    ("DELETE", "/v1/schedules/{name}"): "delete_schedule",
    ("GET", "/v1/pipelines/{name}/report"): "pipeline_report",
    ("PUT", "/v1/pipelines/{name}"): "put_pipeline",
    ("GET", "/v1/pipelines/{name}"): "get_pipeline",
    ("POST", "/v1/pipelines/{name}/evals"): "start_eval",
    ("GET", "/v1/pipelines/{name}/evals"): "list_evals",
    ("GET", "/v1/pipelines/{name}/evals/{run_id}"): "get_eval",
    ("POST", "/v1/pipelines/{name}/versions/{version}/activate"): "activate_version",
    ("POST", "/v1/items"): "create_item",
    ("GET", "/v1/items"): "list_items",
    ("GET", "/v1/items/{item_id}"): "get_item",
    ("GET", "/v1/items/{item_id}/events"): "item_events",
    ("GET", "/v1/items/{item_id}/runs"): "item_runs",
    ("GET", "/v1/items/{item_id}/at/{version}"): "item_at",
    ("POST", "/v1/items/{item_id}/retry"): "retry",
    ("POST", "/v1/items/{item_id}/cancel"): "cancel",
    ("POST", "/v1/items/{item_id}/resume"): "resume",
    ("POST", "/v1/items/{item_id}/rewind"): "rewind",
    ("POST", "/v1/items/{item_id}/fork"): "fork",
    ("PUT", "/v1/webhooks/{name}"): "put_webhook",
    ("GET", "/v1/webhooks"): "list_webhooks",
    ("GET", "/v1/webhooks/{name}"): "get_webhook",
    ("DELETE", "/v1/webhooks/{name}"): "delete_webhook",
    ("GET", "/v1/webhooks/{name}/deliveries"): "webhook_deliveries",
    ("POST", "/v1/webhooks/{name}/deliveries/{delivery_id}/redrive"): "redrive_delivery",
    ("POST", "/v1/claims"): "claim",
    ("POST", "/v1/leases/{lease_id}/heartbeat"): "heartbeat",
    ("POST", "/v1/leases/{lease_id}/complete"): "complete",
    ("POST", "/v1/leases/{lease_id}/fail"): "fail",
    ("PUT", "/v1/topics/{name}"): "put_topic",
    ("GET", "/v1/topics/{name}"): "get_topic",
    ("GET", "/v1/topics"): "list_topics",
    ("PUT", "/v1/budgets/{scope}"): "put_budget",
    ("GET", "/v1/budgets"): "list_budgets",
    ("POST", "/v1/budgets/{scope}/reset"): "reset_budget",
    ("GET", "/v1/audit"): "audit",
    ("GET", "/v1/events"): "events",
    ("GET", "/v1/stream"): "stream_events",
    ("GET", "/v1/projections"): "projections",
    ("GET", "/v1/health"): "health",
    ("GET", "/healthz"): "healthz",
    ("GET", "/readyz"): "readyz",
    ("GET", "/metrics"): "metrics",
}

# In the table ahead of the service: the live feed is being built on main (DESIGN §12).
LANDING = {("GET", "/v1/stream")}

# What each required parameter of an SDK method is called with when its request is recorded.
SAMPLES: dict[str, Any] = {
    "name": "writer",
    "role": "agent",
    "stages": ["draft"],
    "spec": {"stages": [{"name": "draft"}]},
    "pipeline": "article",
    "topic": "costs",
    "title": "A title",
    "item_id": "0123456789abcdef0123456789abcdef",
    "version": 3,
    "stage": "draft",
    "lease_id": "0123456789abcdef0123456789abcdef0123456789abcdef",
    "error": "boom",
    "scope": "stage:draft",
    "cases": [{"name": "c", "checks": [{"kind": "contains", "value": "x"}]}],
    "run_id": "0123456789abcdef0123456789abcdef",
    "alert_usd": 1,
    "halt_usd": 2,
    "max_concurrent_leases": 2,
    "schedule": {"pipeline": "article", "topic": "t", "title": "x", "every_seconds": 60},
    "reason": "why",
    "url": "https://hooks.example/x",
    "events": ["ItemParked"],
    "secret": "a-secret-value",
    "delivery_id": "00000000-0000-4000-8000-000000000001",
}


def server_routes() -> set[tuple[str, str]]:
    schema = create_app(Settings(database_url="postgresql://unused@127.0.0.1/none")).openapi()
    return {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if method in {"get", "put", "post", "delete", "patch"}
    }


class Recorded(Exception):
    """Raised by the mock transport once it has seen the request: the answer does not matter."""

    def __init__(self, request: httpx.Request) -> None:
        super().__init__(f"{request.method} {request.url.path}")
        self.request = request


def _record(request: httpx.Request) -> httpx.Response:
    raise Recorded(request)


def _arguments(method: Callable[..., Any]) -> dict[str, Any]:
    parameters = inspect.signature(method).parameters.values()
    return {
        p.name: SAMPLES[p.name]
        for p in parameters
        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }


def _sent_by(name: str) -> httpx.Request:
    """The request a Client method sends."""
    with Client("http://so.test", "t", transport=httpx.MockTransport(_record)) as client:
        method = getattr(client, name)
        try:
            answer = method(**_arguments(method))
            if isinstance(answer, Iterator):
                next(answer)
        except Recorded as recorded:
            return recorded.request
    raise AssertionError(f"Client.{name} sent nothing")


def _sent_async_by(name: str) -> httpx.Request:
    async def send() -> httpx.Request:
        async with AsyncClient(
            "http://so.test", "t", transport=httpx.MockTransport(_record)
        ) as client:
            method = getattr(client, name)
            try:
                answer = method(**_arguments(method))
                if isinstance(answer, AsyncIterator):
                    await answer.__anext__()
                else:
                    await answer
            except Recorded as recorded:
                return recorded.request
        raise AssertionError(f"AsyncClient.{name} sent nothing")

    return asyncio.run(send())


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


class TestRouteCoverage:
    def test_every_route_of_the_service_has_an_sdk_method(self) -> None:
        """A route added to the service without a method in the table (and so in the SDK) fails."""
        missing = sorted(server_routes() - set(ROUTES))
        assert not missing, f"routes with no SDK method: {missing}"

    def test_the_table_names_no_route_the_service_lacks(self) -> None:
        """A method left pointing at a removed or renamed route fails (the live feed is landing)."""
        stale = sorted(set(ROUTES) - server_routes() - LANDING)
        assert not stale, f"SDK methods for routes the service does not have: {stale}"
        for route in sorted(LANDING - server_routes()):
            print(f"not yet in the service's OpenAPI (landing on main): {route}")

    @pytest.mark.parametrize(("route", "name"), sorted(ROUTES.items()))
    def test_each_method_sends_its_route(self, route: tuple[str, str], name: str) -> None:
        """Client.<method> and AsyncClient.<method> send the method and a path of the route."""
        verb, path = route
        for request in (_sent_by(name), _sent_async_by(name)):
            assert request.method == verb
            assert _template(path).match(request.url.path), request.url.path
            assert request.headers["authorization"] == "Bearer t"


def _answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return Client("http://so.test", "t", transport=httpx.MockTransport(handler))


def _problem(status: int, code: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"https://stateowner.dev/problems/{code}", "title": code, "status": status,
            "detail": f"detail of {code}", "code": code, **extra}  # fmt: skip


class TestProblems:
    @pytest.mark.parametrize(
        ("status", "code", "cls"),
        [
            (401, "unauthorized", so.Unauthorized),
            (403, "forbidden", so.Forbidden),
            (404, "not_found", so.NotFound),
            (409, "version_conflict", so.VersionConflict),
            (409, "lease_lost", so.LeaseLost),
            (409, "idempotency_mismatch", so.IdempotencyMismatch),
            (409, "already_exists", so.AlreadyExists),
            (409, "eval_gate", so.EvalGateRefused),
            (409, "invalid_state", so.InvalidState),
            (413, "payload_too_large", so.PayloadTooLarge),
            (422, "validation_error", so.ValidationError),
            (423, "budget_halted", so.BudgetHalted),
            (429, "too_many_requests", so.TooManyRequests),
            (503, "unavailable", so.Unavailable),
        ],
    )
    def test_a_problem_raises_the_class_of_its_code(
        self, status: int, code: str, cls: type[so.ProblemError]
    ) -> None:
        """The exception carries status, code, detail and the body as the service sent them."""
        with _answering(status, _problem(status, code)) as client, pytest.raises(cls) as raised:
            client.get_item("x")
        assert (raised.value.status, raised.value.code) == (status, code)
        assert raised.value.detail == f"detail of {code}"
        assert raised.value.body["type"].endswith(code)

    def test_budget_halted_names_its_scope_spend_and_limit(self) -> None:
        """A 423 tells which breaker is open, how much was spent and the halt level."""
        body = _problem(423, "budget_halted", scope="stage:draft", spent_usd=2.5, halt_usd=2,
                        window="2026-05-09")  # fmt: skip
        with _answering(423, body) as client, pytest.raises(so.BudgetHalted) as raised:
            client.claim("draft")
        assert (raised.value.scope, raised.value.spent_usd) == ("stage:draft", 2.5)
        assert (raised.value.halt_usd, raised.value.window) == (2.0, "2026-05-09")

    def test_retry_after_is_read_from_the_header(self) -> None:
        """503 and 429 say how long to wait; the exception keeps it for the caller's backoff."""
        body = _problem(429, "too_many_requests")
        with (
            _answering(429, body, {"Retry-After": "3"}) as client,
            pytest.raises(so.TooManyRequests) as raised,
        ):
            client.claim("draft")
        assert raised.value.retry_after == 3.0

    def test_an_answer_that_is_not_a_problem_still_raises_by_status(self) -> None:
        """A proxy's HTML 502 is a ServerError with the text kept; an unknown 4xx a ProblemError."""
        with (
            _answering(502, "<html>bad gateway</html>") as client,
            pytest.raises(so.ServerError) as raised,
        ):
            client.healthz()
        assert raised.value.status == 502
        assert "bad gateway" in raised.value.body["detail"]
        with (
            _answering(418, {"detail": "teapot"}) as client,
            pytest.raises(so.ProblemError) as other,
        ):
            client.healthz()
        assert type(other.value) is so.ProblemError

    def test_no_connection_is_a_transport_error(self) -> None:
        """A refused connection is raised as the SDK's TransportError, not httpx's."""

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        with (
            Client("http://so.test", transport=httpx.MockTransport(refuse)) as client,
            pytest.raises(so.TransportError),
        ):
            client.healthz()

    def test_not_ready_is_an_answer_not_a_problem(self) -> None:
        """/readyz answering 503 gives Readiness(ready=False) with its checks."""
        body = {"status": "not_ready", "checks": {"database": "unreachable: OperationalError"}}
        with _answering(503, body) as client:
            readiness = client.readyz()
        assert not readiness.ready
        assert readiness.checks["database"].startswith("unreachable")


ITEM = {
    "id": "0123456789abcdef0123456789abcdef",
    "pipeline": "article",
    "pipeline_version": 1,
    "topic": "costs",
    "title": "T",
    "stage": "draft",
    "status": "claimed",
    "visit": 1,
    "attempt": 2,
    "agent": "writer",
    "lease_expires_at": "2026-05-09T10:00:30Z",
    "not_before": None,
    "visits": {"research": 1, "draft": 1},
    "transitions": 1,
    "cost_usd": 0.25,
    "tokens": {"in": 900, "out": 300},
    "version": 5,
    "position": 42,
    "created_by": "admin",
    "created_at": "2026-05-09T10:00:00+00:00",
    "updated_at": "2026-05-09T10:00:00.5+00:00",
}


class TestModels:
    def test_unknown_fields_are_ignored_and_kept_in_raw(self) -> None:
        """A field the service adds later neither breaks parsing nor gets lost."""
        body = {"item": {**ITEM, "priority": 7}, "input": {"brief": "x"}, "outputs": {},
                "lease": {"id": "L", "stage": "draft", "attempt": 2,
                          "expires_at": "2026-05-09T10:00:30Z", "shard": 3},
                "hint": "new"}  # fmt: skip
        with _answering(200, body) as client:
            claim = client.claim("draft")
        assert claim is not None
        assert claim.item.raw["priority"] == 7
        assert claim.lease.raw["shard"] == 3
        assert claim.raw["hint"] == "new"
        assert claim.item.tokens == so.Tokens(900, 300)
        assert claim.item.lease_expires_at is not None
        assert claim.item.lease_expires_at.tzinfo is not None
        assert claim.input == {"brief": "x"}

    def test_nothing_ready_is_none(self) -> None:
        """A 204 from a claim is None, not an error."""

        def empty(request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

        with Client("http://so.test", transport=httpx.MockTransport(empty)) as client:
            assert client.claim("draft", wait_seconds=1) is None

    def test_an_answer_missing_an_essential_field_is_an_error(self) -> None:
        """An item without an id cannot be worked with: parsing says which field is missing."""
        with _answering(200, {"title": "no id"}) as client, pytest.raises(ValueError, match="'id'"):
            client.get_item("x")

    def test_a_claim_waits_longer_than_the_client_timeout_allows(self) -> None:
        """A long-poll claim's read time-out covers its wait, whatever the client's default."""
        seen: list[dict[str, Any]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.extensions["timeout"])
            return httpx.Response(204)

        with Client("http://so.test", timeout=2, transport=httpx.MockTransport(handler)) as client:
            client.claim("draft", wait_seconds=25)
        assert seen[0]["read"] > 25


def _paged(pages: dict[str | None, dict[str, Any]], seen: list[httpx.Request]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        cursor = request.url.params.get("cursor") or request.url.params.get("after")
        return httpx.Response(200, json=pages[cursor])

    return Client("http://so.test", transport=httpx.MockTransport(handler))


def _event(position: int) -> dict[str, Any]:
    return {"position": position, "version": position, "type": "StageReady", "actor": "system:bus",
            "at": "2026-05-09T10:00:00Z", "data": {"stage": "draft"}, "aggregate_id": "a"}  # fmt: skip


class TestPaging:
    def test_item_events_follow_next_cursor_until_it_is_null(self) -> None:
        """A paged history is read page after page, each asked with the cursor the last gave."""
        seen: list[httpx.Request] = []
        pages: dict[str | None, dict[str, Any]] = {
            None: {"events": [_event(1), _event(2)], "next_cursor": "c2"},
            "c2": {"events": [_event(3)], "next_cursor": None},
        }
        with _paged(pages, seen) as client:
            positions = [event.position for event in client.item_events("i", page_size=2)]
        assert positions == [1, 2, 3]
        assert [r.url.params.get("cursor") for r in seen] == [None, "c2"]
        assert seen[0].url.params["limit"] == "2"

    def test_a_history_answered_whole_is_one_page(self) -> None:
        """Without a next_cursor field (the service before paging), one request reads it all."""
        seen: list[httpx.Request] = []
        pages: dict[str | None, dict[str, Any]] = {None: {"events": [_event(1), _event(2)]}}
        with _paged(pages, seen) as client:
            assert len(list(client.item_events("i"))) == 2
        assert len(seen) == 1

    def test_runs_and_items_and_audit_page_too(self) -> None:
        """Each paged list follows its own cursor field: next_cursor, or next_after for audit."""
        seen: list[httpx.Request] = []
        run = {"lease_id": "L", "agent": "a", "stage": "s", "attempt": 1, "result": "completed",
               "tokens": {"in": 1, "out": 2}, "trace": {"tool_calls": []}}  # fmt: skip
        entry = {"position": 1, "type": "ItemCreated", "actor": "admin"}
        pages: dict[str | None, dict[str, Any]] = {
            None: {
                "runs": [run],
                "items": [ITEM],
                "entries": [entry],
                "next_cursor": "n",
                "next_after": 5,
            },
            "n": {"runs": [run], "items": [ITEM], "next_cursor": None},
            "5": {"entries": [entry], "next_after": None},
        }
        with _paged(pages, seen) as client:
            assert len(list(client.item_runs("i"))) == 2
            assert len(list(client.list_items(status="done"))) == 2
            assert len(list(client.audit(actor="admin"))) == 2

    def test_a_cursor_that_comes_back_stops_the_loop(self) -> None:
        """A service that hands back a cursor it gave before is an error, not an endless loop."""
        pages: dict[str | None, dict[str, Any]] = {
            None: {"events": [_event(1)], "next_cursor": "a"},
            "a": {"events": [_event(2)], "next_cursor": "a"},
        }
        with _paged(pages, []) as client, pytest.raises(so.ProblemError, match="came back"):
            list(client.item_events("i"))

    def test_async_paging_reads_every_page(self) -> None:
        """AsyncClient's paged methods are async iterators over all the pages."""
        pages: dict[str | None, dict[str, Any]] = {
            None: {"events": [_event(1)], "next_cursor": "b"},
            "b": {"events": [_event(2)], "next_cursor": None},
        }

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=pages[request.url.params.get("cursor")])

        async def read() -> list[int]:
            async with AsyncClient("http://so.test", transport=httpx.MockTransport(handler)) as c:
                return [event.position async for event in c.item_events("i")]

        assert asyncio.run(read()) == [1, 2]


def _sse(*events: tuple[int, dict[str, Any]]) -> bytes:
    chunks = [": keep-alive\n\n"]
    for position, body in events:
        chunks.append(f"id: {position}\nevent: {body['type']}\ndata: {json.dumps(body)}\n\n")
    return "".join(chunks).encode()


class TestLiveFeed:
    def test_the_decoder_joins_data_lines_and_skips_comments(self) -> None:
        """Multi-line data is one message; a comment is no message; the id and event are kept."""
        decoder = Decoder()
        lines = [": ping", "", "id: 7", "event: StageReady", 'data: {"a":', "data: 1}", ""]
        messages = [m for m in map(decoder.feed, lines) if m is not None]
        assert messages == [Message('{"a":\n1}', "StageReady", "7")]

    def test_a_message_without_a_position_takes_its_id(self) -> None:
        """The id: line is the log position when the data does not repeat it."""
        event = event_of(Message('{"type": "ItemCreated"}', None, "12"))
        assert event is not None
        assert event.position == 12

    def test_the_stream_resumes_after_the_last_event_seen(self) -> None:
        """When the feed drops, the SDK reconnects with Last-Event-ID and misses nothing."""
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            first = len(seen) == 1
            body = _sse((1, _event(1)), (2, _event(2))) if first else _sse((3, _event(3)))
            return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

        with Client("http://so.test", transport=httpx.MockTransport(handler)) as client:
            stream = client.stream_events(after=0, type="StageReady")
            positions = [next(stream).position for _ in range(3)]
        assert positions == [1, 2, 3]
        assert "last-event-id" not in seen[0].headers or seen[0].headers["last-event-id"] == "0"
        assert seen[1].headers["last-event-id"] == "2"
        assert seen[1].url.params["type"] == "StageReady"

    def test_without_reconnect_the_stream_ends_with_the_connection(self) -> None:
        """reconnect=False yields what one connection carried, then stops."""

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=_sse((4, _event(4))))

        with Client("http://so.test", transport=httpx.MockTransport(handler)) as client:
            assert [e.position for e in client.stream_events(reconnect=False)] == [4]
