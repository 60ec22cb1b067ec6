from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from api.container import Container
from api.deps import (
    AgentOrOperator,
    AnyPrincipal,
    Auditor,
    ByDep,
    ContainerDep,
    Operator,
    parse_uuid,
    request_context,
    wait_for_view,
)
from api.errors import forbidden, idempotency_mismatch, not_found, validation
from api.presenters import event_body, item_from_aggregate, item_from_row, runs_of
from api.schemas import ItemCreate, ItemEventsOut, ItemListOut, ItemOut, Name, OperatorCommandOut
from domain.agent import Role
from domain.application import StateOwner
from domain.errors import AlreadyExists, NotFound
from domain.item import Item
from domain.values import By
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
    container: ContainerDep,
    by: ByDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> dict[str, Any]:
    """Create an item on a pipeline's latest version; its first stage is ready at once."""
    app = container.app
    new = body.new_item(_fingerprint(body))
    item_id = None
    if idempotency_key is not None:
        # The key fixes the item's identity, so a repeat can never append a second item.
        item_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.actor}\n{idempotency_key}")
    try:
        item, position = app.create_item(new, by, item_id)
    except AlreadyExists:
        assert item_id is not None
        item = app.item(item_id, version=2)
        if item.fingerprint != new.fingerprint:
            raise idempotency_mismatch() from None
        position = container.queries.event_position(item_id, 2)
    request_context(request)["item_id"] = str(item.id)
    response.headers["Location"] = f"/v1/items/{item.id}"
    return item_from_aggregate(item, position)


@router.get("", response_model=ItemListOut)
def list_items(
    principal: AnyPrincipal,
    container: ContainerDep,
    pipeline: Annotated[Name | None, Query()] = None,
    topic: Annotated[Name | None, Query()] = None,
    stage: Annotated[Name | None, Query()] = None,
    status: StatusName = None,
    agent: Annotated[Name | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    min_position: Position = None,
) -> dict[str, Any]:
    if min_position is not None:
        wait_for_view(container, "item_status", min_position)
    try:
        rows, next_cursor = container.queries.items(
            pipeline=pipeline,
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
    container: ContainerDep,
    min_position: Position = None,
) -> dict[str, Any]:
    """The item as the item_status projection shows it (pass min_position to read your write)."""
    uid = _item_id(request, item_id)
    if min_position is not None:
        wait_for_view(container, "item_status", min_position)
    row = container.queries.item(uid)
    if row is None:
        try:
            container.app.item(uid)
        except NotFound:
            raise not_found(f"no item {item_id}") from None
        # The item exists but its row has not landed yet: wait for the projection, bounded.
        wait_for_view(container, "item_status", container.app.position())
        row = container.queries.item(uid)
        if row is None:
            raise not_found(f"no item {item_id}")
    return item_from_row(row)


@router.get("/{item_id}/events", response_model=ItemEventsOut)
def item_events(
    item_id: str, request: Request, principal: AnyPrincipal, container: ContainerDep
) -> dict[str, Any]:
    """The item's whole history, in order: auditors, and agents that worked on it."""
    history = _history(_item_id(request, item_id), principal, container)
    return {"events": [event_body(event, position) for event, position in history]}


@router.get("/{item_id}/runs")
def item_runs(
    item_id: str, request: Request, principal: AnyPrincipal, container: ContainerDep
) -> dict[str, Any]:
    """Every attempt at every stage: who ran it, when, how it ended, what it cost, its trace."""
    return {"runs": runs_of(_history(_item_id(request, item_id), principal, container))}


def _history(
    item_id: uuid.UUID, principal: AnyPrincipal, container: Container
) -> list[tuple[Any, int]]:
    """The item's events with their positions, for auditors and agents that worked on it."""
    history = [
        (container.app.mapper.to_domain_event(stored), position)
        for stored, position in container.queries.stored_events(item_id)
    ]
    if not history or not isinstance(history[0][0], Item.ItemCreated):
        raise not_found(f"no item {item_id}")
    worked_on = any(getattr(event, "agent", None) == principal.name for event, _ in history)
    if not principal.has(Role.AUDITOR) and not (principal.role == Role.AGENT and worked_on):
        raise forbidden("only auditors and agents that worked on this item may read its history")
    return history


@router.get("/{item_id}/at/{version}", response_model=ItemOut)
def item_at_version(
    item_id: str,
    version: str,
    request: Request,
    principal: Auditor,
    container: ContainerDep,
) -> dict[str, Any]:
    """The item as it stood once it had `version` events."""
    uid = _item_id(request, item_id)
    number = int(version) if version.isdigit() and len(version) < 10 else 0
    current = container.app.item(uid)
    if not 1 <= number <= current.version:
        raise not_found(f"item {item_id} has no version {version!r}; it is at {current.version}")
    item: Item = container.app.item(uid, version=number)
    return item_from_aggregate(item, container.queries.event_position(uid, number))


OperatorCommand = Callable[[StateOwner, uuid.UUID, By], tuple[Item, int]]


def _operator_command(
    command: OperatorCommand, item_id: str, request: Request, container: Container, by: By
) -> dict[str, Any]:
    item, position = command(container.app, _item_id(request, item_id), by)
    return {"item": item_from_aggregate(item, position)}


@router.post("/{item_id}/retry", response_model=OperatorCommandOut)
def retry_item(
    item_id: str, request: Request, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    """Un-park an item: its stage is ready again with attempts reset."""
    return _operator_command(StateOwner.retry_item, item_id, request, container, by)


@router.post("/{item_id}/cancel", response_model=OperatorCommandOut)
def cancel_item(
    item_id: str, request: Request, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    return _operator_command(StateOwner.cancel_item, item_id, request, container, by)


@router.post("/{item_id}/resume", response_model=OperatorCommandOut)
def resume_item(
    item_id: str, request: Request, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    return _operator_command(StateOwner.resume_item, item_id, request, container, by)
