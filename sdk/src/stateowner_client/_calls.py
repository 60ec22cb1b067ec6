"""Each v1 route once: how to ask it and how to read its answer. `Client` and `AsyncClient` only
send these, so the contract lives in one place for both."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from stateowner_client.models import (
    Activation,
    Agent,
    AuditEntry,
    Budget,
    Claim,
    Delivery,
    EvalRun,
    EvalStarted,
    EventPage,
    Health,
    Heartbeat,
    Item,
    OperatorHealth,
    Pipeline,
    PipelineReport,
    ProjectionStatus,
    Readiness,
    Run,
    Schedule,
    StageReport,
    Topic,
    Webhook,
    decode,
)
from stateowner_client.models import Event as LogEvent

T = TypeVar("T")
Cursor = str | int | None
Money = float | int | Decimal

# A long-poll claim may wait this long on the server before it answers 204.
MAX_CLAIM_WAIT_SECONDS = 30.0
# On top of the claim's own wait: the network and a busy server.
CLAIM_TIMEOUT_MARGIN_SECONDS = 15.0


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    # Statuses that are answers here, not problems (readiness says "not ready" with a 503).
    accept: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Page(Generic[T]):
    entries: list[T]
    next: Cursor


def segment(value: str) -> str:
    return quote(str(value), safe="")


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters, leaving out the unset ones; times in ISO 8601."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in values.items()
        if value is not None
    }


def _key(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key} if idempotency_key else {}


def _one(cls: type[T]) -> Callable[[httpx.Response], T]:
    return lambda response: decode(cls, response.json())


def _each(cls: type[T], key: str | None = None) -> Callable[[httpx.Response], list[T]]:
    def parse(response: httpx.Response) -> list[T]:
        body = response.json()
        return [decode(cls, entry) for entry in (body[key] if key else body)]

    return parse


def _page(cls: type[T], key: str, next_key: str) -> Callable[[httpx.Response], Page[T]]:
    def parse(response: httpx.Response) -> Page[T]:
        body = response.json()
        # A list answered whole (no cursor field at all) is its own last page.
        return Page([decode(cls, entry) for entry in body[key]], body.get(next_key))

    return parse


def _item_of_command(response: httpx.Response) -> Item:
    return decode(Item, response.json()["item"])


def _claim(response: httpx.Response) -> Claim | None:
    return None if response.status_code == 204 else decode(Claim, response.json())


def _money(value: Money) -> float:
    return float(value)


# -- agents ---------------------------------------------------------------------------------------


def create_agent(
    name: str,
    role: str,
    stages: Sequence[str],
    idempotency_key: str | None,
    max_concurrent_leases: int | None = None,
) -> Call[Agent]:
    body: dict[str, Any] = {"name": name, "role": role, "stages": list(stages)}
    if max_concurrent_leases is not None:
        body["max_concurrent_leases"] = max_concurrent_leases
    return Call("POST", "/v1/agents", _one(Agent), json=body, headers=_key(idempotency_key))


def list_agents() -> Call[list[Agent]]:
    return Call("GET", "/v1/agents", _each(Agent, "agents"))


def rotate_token(name: str) -> Call[Agent]:
    return Call("POST", f"/v1/agents/{segment(name)}/rotate", _one(Agent))


def set_agent_stages(name: str, stages: Sequence[str]) -> Call[Agent]:
    path = f"/v1/agents/{segment(name)}/stages"
    return Call("PUT", path, _one(Agent), json={"stages": list(stages)})


def disable_agent(name: str) -> Call[Agent]:
    return Call("POST", f"/v1/agents/{segment(name)}/disable", _one(Agent))


def set_agent_limits(name: str, max_concurrent_leases: int | None) -> Call[Agent]:
    path = f"/v1/agents/{segment(name)}/limits"
    return Call("PUT", path, _one(Agent), json={"max_concurrent_leases": max_concurrent_leases})


# -- schedules and reports ------------------------------------------------------------------------


def put_schedule(name: str, schedule: Mapping[str, Any]) -> Call[Schedule]:
    return Call("PUT", f"/v1/schedules/{segment(name)}", _one(Schedule), json=dict(schedule))


def list_schedules() -> Call[list[Schedule]]:
    return Call("GET", "/v1/schedules", _each(Schedule, "schedules"))


def get_schedule(name: str) -> Call[Schedule]:
    return Call("GET", f"/v1/schedules/{segment(name)}", _one(Schedule))


def delete_schedule(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/schedules/{segment(name)}", lambda response: None)


def pipeline_report(name: str, days: int) -> Call[PipelineReport]:
    path = f"/v1/pipelines/{segment(name)}/report"
    return Call("GET", path, _one(PipelineReport), params={"days": days})


# -- pipelines ------------------------------------------------------------------------------------


def put_pipeline(name: str, spec: Mapping[str, Any] | str) -> Call[Pipeline]:
    path = f"/v1/pipelines/{segment(name)}"
    if isinstance(spec, str):
        toml = {"Content-Type": "application/toml"}
        return Call("PUT", path, _one(Pipeline), content=spec.encode(), headers=toml)
    return Call("PUT", path, _one(Pipeline), json=dict(spec))


def get_pipeline(name: str, version: int | None) -> Call[Pipeline]:
    path = f"/v1/pipelines/{segment(name)}"
    return Call("GET", path, _one(Pipeline), params=_params(version=version))


def start_eval(
    pipeline: str,
    version: int,
    cases: Sequence[Mapping[str, Any]],
    topic: str | None,
    idempotency_key: str | None,
) -> Call[EvalStarted]:
    path = f"/v1/pipelines/{segment(pipeline)}/evals"
    body: dict[str, Any] = {"version": version, "cases": [dict(case) for case in cases]}
    if topic is not None:
        body["topic"] = topic
    return Call("POST", path, _one(EvalStarted), json=body, headers=_key(idempotency_key))


def get_eval(pipeline: str, run_id: str, min_position: int | None) -> Call[EvalRun]:
    path = f"/v1/pipelines/{segment(pipeline)}/evals/{segment(run_id)}"
    return Call("GET", path, _one(EvalRun), params=_params(min_position=min_position))


def list_evals(pipeline: str, version: int | None, limit: int | None) -> Call[list[EvalRun]]:
    path = f"/v1/pipelines/{segment(pipeline)}/evals"
    params = _params(version=version, limit=limit)
    return Call("GET", path, _each(EvalRun, "runs"), params=params)


def activate_version(pipeline: str, version: int, force: bool) -> Call[Activation]:
    path = f"/v1/pipelines/{segment(pipeline)}/versions/{version}/activate"
    params = {"force": "true"} if force else None
    return Call("POST", path, _one(Activation), params=params)


# -- items ----------------------------------------------------------------------------------------


def create_item(
    pipeline: str,
    topic: str,
    title: str,
    input: Mapping[str, Any] | None,
    idempotency_key: str | None,
) -> Call[Item]:
    body = {"pipeline": pipeline, "topic": topic, "title": title, "input": dict(input or {})}
    return Call("POST", "/v1/items", _one(Item), json=body, headers=_key(idempotency_key))


def get_item(item_id: str, min_position: int | None) -> Call[Item]:
    path = f"/v1/items/{segment(item_id)}"
    return Call("GET", path, _one(Item), params=_params(min_position=min_position))


def list_items(
    topic: str | None,
    stage: str | None,
    status: str | None,
    agent: str | None,
    page_size: int,
    min_position: int | None,
) -> Callable[[Cursor], Call[Page[Item]]]:
    def page(cursor: Cursor) -> Call[Page[Item]]:
        params = _params(
            topic=topic,
            stage=stage,
            status=status,
            agent=agent,
            limit=page_size,
            cursor=cursor,
            min_position=min_position,
        )
        return Call("GET", "/v1/items", _page(Item, "items", "next_cursor"), params=params)

    return page


def item_events(item_id: str, page_size: int | None) -> Callable[[Cursor], Call[Page[LogEvent]]]:
    path = f"/v1/items/{segment(item_id)}/events"

    def page(cursor: Cursor) -> Call[Page[LogEvent]]:
        params = _params(limit=page_size, cursor=cursor)
        return Call("GET", path, _page(LogEvent, "events", "next_cursor"), params=params)

    return page


def item_runs(item_id: str, page_size: int | None) -> Callable[[Cursor], Call[Page[Run]]]:
    path = f"/v1/items/{segment(item_id)}/runs"

    def page(cursor: Cursor) -> Call[Page[Run]]:
        params = _params(limit=page_size, cursor=cursor)
        return Call("GET", path, _page(Run, "runs", "next_cursor"), params=params)

    return page


def item_at(item_id: str, version: int) -> Call[Item]:
    return Call("GET", f"/v1/items/{segment(item_id)}/at/{int(version)}", _one(Item))


def item_command(item_id: str, command: str) -> Call[Item]:
    return Call("POST", f"/v1/items/{segment(item_id)}/{command}", _item_of_command)


def rewind(item_id: str, stage: str, reason: str) -> Call[Item]:
    path = f"/v1/items/{segment(item_id)}/rewind"
    return Call("POST", path, _item_of_command, json={"stage": stage, "reason": reason})


def fork(
    item_id: str, stage: str, pipeline_version: int | None, idempotency_key: str | None
) -> Call[Item]:
    body: dict[str, Any] = {"stage": stage}
    if pipeline_version is not None:
        body["pipeline_version"] = pipeline_version
    path = f"/v1/items/{segment(item_id)}/fork"
    return Call("POST", path, _one(Item), json=body, headers=_key(idempotency_key))


# -- work -----------------------------------------------------------------------------------------


def claim(stage: str, wait_seconds: float) -> Call[Claim | None]:
    wait = min(max(wait_seconds, 0.0), MAX_CLAIM_WAIT_SECONDS)
    body = {"stage": stage, "wait_seconds": wait}
    timeout = wait + CLAIM_TIMEOUT_MARGIN_SECONDS
    return Call("POST", "/v1/claims", _claim, json=body, timeout=timeout)


def heartbeat(lease_id: str, timeout: float | None) -> Call[Heartbeat]:
    path = f"/v1/leases/{segment(lease_id)}/heartbeat"
    return Call("POST", path, _one(Heartbeat), timeout=timeout)


def complete(
    lease_id: str,
    *,
    output: Any,
    outcome: str | None,
    cost_usd: Money,
    tokens_in: int,
    tokens_out: int,
    duration_ms: int,
    trace: Any,
    idempotency_key: str | None,
    model: str | None = None,
) -> Call[StageReport]:
    body: dict[str, Any] = {
        "output": output,
        "cost_usd": _money(cost_usd),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "duration_ms": duration_ms,
        "trace": trace,
    }
    if outcome is not None:
        body["outcome"] = outcome
    if model is not None:
        body["model"] = model
    path = f"/v1/leases/{segment(lease_id)}/complete"
    return Call("POST", path, _one(StageReport), json=body, headers=_key(idempotency_key))


def fail(
    lease_id: str,
    *,
    error: str,
    retryable: bool,
    cost_usd: Money,
    tokens_in: int,
    tokens_out: int,
    duration_ms: int,
    trace: Any,
    idempotency_key: str | None,
    model: str | None = None,
) -> Call[StageReport]:
    body: dict[str, Any] = {
        "error": error,
        "retryable": retryable,
        "cost_usd": _money(cost_usd),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "duration_ms": duration_ms,
        "trace": trace,
    }
    if model is not None:
        body["model"] = model
    path = f"/v1/leases/{segment(lease_id)}/fail"
    return Call("POST", path, _one(StageReport), json=body, headers=_key(idempotency_key))


# -- topics and budgets ---------------------------------------------------------------------------


def put_topic(
    name: str,
    owner: str | None,
    priority: int,
    tags: Sequence[str],
    metadata: Mapping[str, Any] | None,
) -> Call[Topic]:
    body = {
        "owner": owner,
        "priority": priority,
        "tags": list(tags),
        "metadata": dict(metadata or {}),
    }
    return Call("PUT", f"/v1/topics/{segment(name)}", _one(Topic), json=body)


def get_topic(name: str) -> Call[Topic]:
    return Call("GET", f"/v1/topics/{segment(name)}", _one(Topic))


def list_topics() -> Call[list[Topic]]:
    return Call("GET", "/v1/topics", _each(Topic, "topics"))


def put_budget(scope: str, alert_usd: Money, halt_usd: Money) -> Call[Budget]:
    body = {"alert_usd": _money(alert_usd), "halt_usd": _money(halt_usd)}
    return Call("PUT", f"/v1/budgets/{segment(scope)}", _one(Budget), json=body)


def list_budgets() -> Call[list[Budget]]:
    return Call("GET", "/v1/budgets", _each(Budget))


def reset_budget(scope: str) -> Call[Budget]:
    return Call("POST", f"/v1/budgets/{segment(scope)}/reset", _one(Budget))


# -- webhooks ---------------------------------------------------------------------------------------


def put_webhook(name: str, url: str, events: Sequence[str], secret: str) -> Call[Webhook]:
    body = {"url": url, "events": list(events), "secret": secret}
    return Call("PUT", f"/v1/webhooks/{segment(name)}", _one(Webhook), json=body)


def get_webhook(name: str) -> Call[Webhook]:
    return Call("GET", f"/v1/webhooks/{segment(name)}", _one(Webhook))


def list_webhooks() -> Call[list[Webhook]]:
    return Call("GET", "/v1/webhooks", _each(Webhook))


def delete_webhook(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/webhooks/{segment(name)}", lambda response: None)


def webhook_deliveries(
    name: str, status: str | None, page_size: int | None
) -> Callable[[Cursor], Call[Page[Delivery]]]:
    path = f"/v1/webhooks/{segment(name)}/deliveries"

    def page(cursor: Cursor) -> Call[Page[Delivery]]:
        params = _params(status=status, limit=page_size, cursor=cursor)
        return Call("GET", path, _page(Delivery, "deliveries", "next_cursor"), params=params)

    return page


def redrive_delivery(name: str, delivery_id: str) -> Call[Delivery]:
    path = f"/v1/webhooks/{segment(name)}/deliveries/{segment(delivery_id)}/redrive"
    return Call("POST", path, _one(Delivery))


# -- audit, the log, the followers, health ----------------------------------------------------


def audit(
    actor: str | None,
    type: str | None,
    item: str | None,
    since: datetime | None,
    until: datetime | None,
    page_size: int,
) -> Callable[[Cursor], Call[Page[AuditEntry]]]:
    def page(cursor: Cursor) -> Call[Page[AuditEntry]]:
        params = _params(
            actor=actor,
            type=type,
            item=item,
            since=since,
            until=until,
            after=cursor,
            limit=page_size,
        )
        return Call("GET", "/v1/audit", _page(AuditEntry, "entries", "next_after"), params=params)

    return page


def events(after: int, limit: int) -> Call[EventPage]:
    return Call("GET", "/v1/events", _one(EventPage), params=_params(after=after, limit=limit))


def projections() -> Call[list[ProjectionStatus]]:
    return Call("GET", "/v1/projections", _each(ProjectionStatus))


def health() -> Call[OperatorHealth]:
    return Call("GET", "/v1/health", _one(OperatorHealth))


def healthz() -> Call[Health]:
    return Call("GET", "/healthz", _one(Health))


def readyz() -> Call[Readiness]:
    return Call("GET", "/readyz", _one(Readiness), accept=frozenset({503}))


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda response: response.text)


def stream_params(
    after: int | None, type: str | None, item: str | None, topic: str | None
) -> dict[str, Any]:
    return _params(after=after, type=type, item=item, topic=topic)


STREAM_PATH = "/v1/stream"
