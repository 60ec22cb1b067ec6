from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

from eventsourcing.persistence import StoredEvent
from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import (
    AgentOrOperator,
    AnyPrincipal,
    Auditor,
    Operator,
    RequestIdDep,
    RuntimeDep,
    parse_uuid,
    request_context,
    wait_for_view,
)
from api.errors import Problem, forbidden, not_found, validation
from api.presenters import event_body, item_from_aggregate, item_from_row
from api.schemas import ItemCreate, ItemEventsOut, ItemListOut, ItemOut, Name, OperatorCommandOut
from domain.agent import Role
from domain.errors import AlreadyExists, NotFound
from domain.item import Item
from projections import queries
from projections.queries import BadCursor

router = APIRouter(prefix="/v1/items", tags=["items"])

IDEMPOTENCY_NAMESPACE = uuid.UUID("9d3f1a6e-52c4-4b8f-b7a1-3c2e5f6a7b04")
Position = Annotated[int | None, Query(ge=0, le=2**62)]
StatusName = Annotated[
    str | None, Query(pattern=r"^(ready|claimed|advancing|done|parked|halted|cancelled)$")
]


def _item_id(request: Request, value: str) -> uuid.UUID:
    item_id = parse_uuid(value, "item")
    request_context(request)["item_id"] = str(item_id)
    return item_id


def _fingerprint(body: ItemCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post("", status_code=201, response_model=ItemOut)
def create_item(
    body: ItemCreate,
    request: Request,
    response: Response,
    principal: AgentOrOperator,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> dict[str, Any]:
    """Create an item on a pipeline's latest version; its first stage is ready at once."""
    app = runtime.app
    fingerprint = _fingerprint(body)
    item_id = None
    if idempotency_key is not None:
        # The key fixes the item's identity, so a repeat can never append a second item.
        item_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.actor}\n{idempotency_key}")
    try:
        item, position = app.create_item(
            pipeline=body.pipeline,
            topic=body.topic,
            title=body.title,
            input=body.input,
            fingerprint=fingerprint,
            actor=principal.actor,
            caused_by=caused_by,
            item_id=item_id,
        )
    except AlreadyExists:
        assert item_id is not None
        first = app.item(item_id, version=2)
        if first.fingerprint != fingerprint:
            raise Problem(
                409,
                "idempotency_mismatch",
                "Idempotency key reused",
                "this Idempotency-Key came with another body",
            ) from None
        with runtime.pool.connection() as conn:
            position = queries.event_position(conn, item_id, 2) or 0
        item = first
    request_context(request)["item_id"] = str(item.id)
    response.headers["Location"] = f"/v1/items/{item.id}"
    return item_from_aggregate(item, position)


@router.get("", response_model=ItemListOut)
def list_items(
    principal: AnyPrincipal,
    runtime: RuntimeDep,
    topic: Annotated[Name | None, Query()] = None,
    stage: Annotated[Name | None, Query()] = None,
    status: StatusName = None,
    agent: Annotated[Name | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    min_position: Position = None,
) -> dict[str, Any]:
    if min_position is not None:
        wait_for_view(runtime, "item_status", min_position)
    with runtime.pool.connection() as conn:
        try:
            rows, next_cursor = queries.list_items(
                conn,
                topic=topic,
                stage=stage,
                status=status,
                agent=agent,
                limit=limit,
                cursor=cursor,
            )
        except BadCursor as error:
            raise validation(str(error)) from None
    return {"items": [item_from_row(row) for row in rows], "next_cursor": next_cursor}


@router.get("/{item_id}", response_model=ItemOut)
def get_item(
    item_id: str,
    request: Request,
    principal: AnyPrincipal,
    runtime: RuntimeDep,
    min_position: Position = None,
) -> dict[str, Any]:
    """The item as the item_status projection shows it (pass min_position to read your write)."""
    uid = _item_id(request, item_id)
    if min_position is not None:
        wait_for_view(runtime, "item_status", min_position)
    with runtime.pool.connection() as conn:
        row = queries.item_row(conn, uid)
    if row is None:
        try:
            runtime.app.item(uid)
        except NotFound:
            raise not_found(f"no item {item_id}") from None
        # The item exists but its row has not landed yet: wait for the projection, bounded.
        wait_for_view(runtime, "item_status", runtime.app.position())
        with runtime.pool.connection() as conn:
            row = queries.item_row(conn, uid)
        if row is None:
            raise not_found(f"no item {item_id}")
    return item_from_row(row)


def _worked_on(events: list[dict[str, Any]], agent: str) -> bool:
    return any(event["data"].get("agent") == agent for event in events)


@router.get("/{item_id}/events", response_model=ItemEventsOut)
def item_events(
    item_id: str, request: Request, principal: AnyPrincipal, runtime: RuntimeDep
) -> dict[str, Any]:
    """The item's whole history, in order: auditors, and agents that worked on it."""
    return {"events": _history(item_id, request, principal, runtime)}


@router.get("/{item_id}/runs")
def item_runs(
    item_id: str, request: Request, principal: AnyPrincipal, runtime: RuntimeDep
) -> dict[str, Any]:
    """Every attempt at every stage: who ran it, when, how it ended, what it cost, its trace."""
    return {"runs": runs_of(_history(item_id, request, principal, runtime))}


def runs_of(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for event in history:
        data = event["data"]
        if event["type"] == "StageClaimed":
            runs[data["lease_id"]] = {
                "lease_id": data["lease_id"],
                "agent": data["agent"],
                "stage": data["stage"],
                "attempt": data["attempt"],
                "claimed_at": event["at"],
                "finished_at": None,
                "result": "running",
                "outcome": None,
                "error": None,
                "cost_usd": 0.0,
                "tokens": {"in": 0, "out": 0},
                "duration_ms": None,
                "trace": None,
            }
        elif event["type"] in ("StageCompleted", "StageFailed", "LeaseExpired"):
            run = runs.get(data["lease_id"])
            if run is None:
                continue
            run["finished_at"] = event["at"]
            run["result"] = {
                "StageCompleted": "completed",
                "StageFailed": "failed",
                "LeaseExpired": "expired",
            }[event["type"]]
            if event["type"] != "LeaseExpired":
                run.update(
                    outcome=data.get("outcome"),
                    error=data.get("error"),
                    cost_usd=data["cost_usd"],
                    tokens={"in": data["tokens_in"], "out": data["tokens_out"]},
                    duration_ms=data["duration_ms"],
                    trace=data["trace"],
                )
    return list(runs.values())


def _history(
    item_id: str, request: Request, principal: AnyPrincipal, runtime: RuntimeDep
) -> list[dict[str, Any]]:
    uid = _item_id(request, item_id)
    with runtime.pool.connection() as conn:
        stored = queries.item_stored_events(conn, uid)
    if not stored:
        raise not_found(f"no item {item_id}")
    events = [
        event_body(
            runtime.app.mapper.to_domain_event(
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
            ),
            row["notification_id"],
        )
        for row in stored
    ]
    if events[0]["type"] != "ItemCreated":
        raise not_found(f"no item {item_id}")
    if not principal.has(Role.AUDITOR) and not (
        principal.role == Role.AGENT and _worked_on(events, principal.name)
    ):
        raise forbidden("only auditors and agents that worked on this item may read its history")
    return events


@router.get("/{item_id}/at/{version}", response_model=ItemOut)
def item_at_version(
    item_id: str,
    version: str,
    request: Request,
    principal: Auditor,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    """The item as it stood once it had `version` events."""
    uid = _item_id(request, item_id)
    number = int(version) if version.isdigit() and len(version) < 10 else 0
    current = runtime.app.item(uid)
    if not 1 <= number <= current.version:
        raise not_found(f"item {item_id} has no version {version!r}; it is at {current.version}")
    item: Item = runtime.app.item(uid, version=number)
    with runtime.pool.connection() as conn:
        position = queries.event_position(conn, uid, number) or 0
    return item_from_aggregate(item, position)


def _operator_command(
    command: str,
    item_id: str,
    request: Request,
    principal: Operator,
    runtime: RuntimeDep,
    caused_by: str,
) -> dict[str, Any]:
    uid = _item_id(request, item_id)
    app = runtime.app
    run = {"retry": app.retry_item, "cancel": app.cancel_item, "resume": app.resume_item}[command]
    item, position = run(uid, actor=principal.actor, caused_by=caused_by)
    return {"item": item_from_aggregate(item, position)}


@router.post("/{item_id}/retry", response_model=OperatorCommandOut)
def retry_item(
    item_id: str,
    request: Request,
    principal: Operator,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    """Un-park an item: its stage is ready again with attempts reset."""
    return _operator_command("retry", item_id, request, principal, runtime, caused_by)


@router.post("/{item_id}/cancel", response_model=OperatorCommandOut)
def cancel_item(
    item_id: str,
    request: Request,
    principal: Operator,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    return _operator_command("cancel", item_id, request, principal, runtime, caused_by)


@router.post("/{item_id}/resume", response_model=OperatorCommandOut)
def resume_item(
    item_id: str,
    request: Request,
    principal: Operator,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    return _operator_command("resume", item_id, request, principal, runtime, caused_by)
