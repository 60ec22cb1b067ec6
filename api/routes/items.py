from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from eventsourcing.utils import get_topic
from fastapi import APIRouter, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

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
from api.openapi import problems
from api.presenters import RUN_RESULTS, event_body, item_from_aggregate, item_from_row, runs_page
from api.schemas import (
    ITEMS_CURSOR,
    ForkedItemOut,
    ForkRequest,
    IdempotencyKey,
    ItemCreate,
    ItemEventsOut,
    ItemListOut,
    ItemOut,
    ItemRunsOut,
    Name,
    OperatorCommandOut,
    RewindRequest,
)
from domain.agent import Role
from domain.application import StateOwner
from domain.errors import AlreadyExists, NotFound
from domain.item import Item
from domain.values import By, NewItem
from projections.follower import decode
from projections.queries import BadCursor

router = APIRouter(prefix="/v1/items", tags=["items"])

IDEMPOTENCY_NAMESPACE = uuid.UUID("9d3f1a6e-52c4-4b8f-b7a1-3c2e5f6a7b04")
PageCursor = Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$")]
PageLimit = Annotated[int, Query(ge=1, le=1000)]
CLAIMED_TOPIC = get_topic(Item.StageClaimed)
RUN_TOPICS = [get_topic(cls) for cls in (Item.StageClaimed, *RUN_RESULTS)]
MAX_CLAIMS_READ = 10_000
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


@router.post("", status_code=201, response_model=ItemOut, responses=problems(404, 409, body=True))
async def create_item(
    body: ItemCreate,
    request: Request,
    response: Response,
    principal: AgentOrOperator,
    container: ContainerDep,
    by: ByDep,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> dict[str, Any]:
    """Create an item on a pipeline's latest version; its first stage is ready at once."""
    new = body.new_item(_fingerprint(body))
    item_id = None
    if idempotency_key is not None:
        # The key fixes the item's identity, so a repeat can never append a second item.
        item_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.actor}\n{idempotency_key}")
    # One trip through the thread pool (a sync route takes a second to validate its response).
    item, position = await run_in_threadpool(_create_item, container, new, by, item_id)
    request_context(request)["item_id"] = str(item.id)
    response.headers["Location"] = f"/v1/items/{item.id}"
    return item_from_aggregate(item, position)


def _create_item(
    container: Container, new: NewItem, by: By, item_id: uuid.UUID | None
) -> tuple[Item, int]:
    """Create the item; a repeat under the same idempotency key gets the first one back."""
    try:
        return container.app.create_item(new, by, item_id)
    except AlreadyExists:
        assert item_id is not None
        item = container.app.item(item_id, version=2)
        if item.fingerprint != new.fingerprint:
            raise idempotency_mismatch() from None
        return item, container.queries.event_position(item_id, 2)


@router.get("", response_model=ItemListOut, responses=problems(409))
def list_items(
    principal: AnyPrincipal,
    container: ContainerDep,
    pipeline: Annotated[Name | None, Query()] = None,
    topic: Annotated[Name | None, Query()] = None,
    stage: Annotated[Name | None, Query()] = None,
    status: StatusName = None,
    agent: Annotated[Name | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=ITEMS_CURSOR)] = None,
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


@router.get("/{item_id}", response_model=ItemOut, responses=problems(404, 409))
async def get_item(
    item_id: str,
    request: Request,
    principal: AnyPrincipal,
    container: ContainerDep,
    min_position: Position = None,
) -> dict[str, Any]:
    """The item as the item_status projection shows it (pass min_position to read your write)."""
    uid = _item_id(request, item_id)
    return await run_in_threadpool(_item_row, container, uid, item_id, min_position)


def _item_row(
    container: Container, uid: uuid.UUID, item_id: str, min_position: int | None
) -> dict[str, Any]:
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


@router.get("/{item_id}/events", response_model=ItemEventsOut, responses=problems(404))
def item_events(
    item_id: str,
    request: Request,
    principal: AnyPrincipal,
    container: ContainerDep,
    cursor: PageCursor = None,
    limit: PageLimit = 100,
) -> dict[str, Any]:
    """The item's history in order, a page at a time (pass next_cursor back as cursor):
    auditors, and agents that worked on it."""
    uid = _readable_item(request, item_id, principal, container)
    page = _events(container, uid, cursor, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return {
        "events": [event_body(event, position) for event, position in page],
        "next_cursor": str(page[-1][0].originator_version) if more else None,
    }


@router.get("/{item_id}/runs", response_model=ItemRunsOut, responses=problems(404))
def item_runs(
    item_id: str,
    request: Request,
    principal: AnyPrincipal,
    container: ContainerDep,
    cursor: PageCursor = None,
    limit: PageLimit = 100,
) -> dict[str, Any]:
    """Every attempt at every stage, a page at a time: who ran it, when, how it ended, what it
    cost, its trace."""
    uid = _readable_item(request, item_id, principal, container)
    # A run is a claim and the event that ended it: `limit` runs fit in 2 x limit events.
    events = _events(container, uid, cursor, 2 * limit + 2, topics=RUN_TOPICS)
    runs, last_version, more = runs_page(events, limit)
    return {"runs": runs, "next_cursor": str(last_version) if more else None}


def _events(
    container: Container,
    item_id: uuid.UUID,
    cursor: str | None,
    limit: int,
    topics: list[str] | None = None,
) -> list[tuple[Any, int]]:
    stored = container.queries.stored_events(
        item_id, after_version=int(cursor or 0), limit=limit, topics=topics
    )
    return [(decode(container.app.mapper, event, position), position) for event, position in stored]


def _readable_item(
    request: Request, item_id: str, principal: AnyPrincipal, container: Container
) -> uuid.UUID:
    """The item's id, once it is known to exist and the caller may read its history: auditors,
    and agents that worked on it."""
    uid = _item_id(request, item_id)
    first = _events(container, uid, None, 1)
    if not first or not isinstance(first[0][0], Item.ItemCreated):
        raise not_found(f"no item {item_id}")
    if principal.has(Role.AUDITOR):
        return uid
    if principal.role == Role.AGENT:
        claims = _events(container, uid, None, MAX_CLAIMS_READ, topics=[CLAIMED_TOPIC])
        if any(event.agent == principal.name for event, _ in claims):
            return uid
    raise forbidden("only auditors and agents that worked on this item may read its history")


@router.get("/{item_id}/at/{version}", response_model=ItemOut, responses=problems(404))
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


@router.post("/{item_id}/retry", response_model=OperatorCommandOut, responses=problems(404, 409))
def retry_item(
    item_id: str, request: Request, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    """Un-park an item: its stage is ready again with attempts reset."""
    return _operator_command(StateOwner.retry_item, item_id, request, container, by)


@router.post("/{item_id}/cancel", response_model=OperatorCommandOut, responses=problems(404, 409))
def cancel_item(
    item_id: str, request: Request, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    return _operator_command(StateOwner.cancel_item, item_id, request, container, by)


@router.post("/{item_id}/resume", response_model=OperatorCommandOut, responses=problems(404, 409))
def resume_item(
    item_id: str, request: Request, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    return _operator_command(StateOwner.resume_item, item_id, request, container, by)


@router.post(
    "/{item_id}/rewind", response_model=OperatorCommandOut, responses=problems(404, 409, body=True)
)
def rewind_item(
    item_id: str,
    body: RewindRequest,
    request: Request,
    principal: Operator,
    container: ContainerDep,
    by: ByDep,
) -> dict[str, Any]:
    """Make a stage the item reached before ready again (a done item too): `ItemRewound`, then
    the stage's new visit, counted by the loop guard."""
    return _operator_command(
        lambda app, uid, by: app.rewind_item(uid, body.stage, body.reason, by),
        item_id,
        request,
        container,
        by,
    )


@router.post(
    "/{item_id}/fork",
    status_code=201,
    response_model=ForkedItemOut,
    responses=problems(404, 409, body=True),
)
def fork_item(
    item_id: str,
    body: ForkRequest,
    request: Request,
    response: Response,
    principal: Operator,
    container: ContainerDep,
    by: ByDep,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> dict[str, Any]:
    """Start a new item ready at `stage`, on the pipeline's latest version (or
    `pipeline_version`), carrying the outputs of the stages before it; `Idempotency-Key`
    supported."""
    source = _item_id(request, item_id)
    canonical = json.dumps(
        {"fork": str(source), **body.model_dump(mode="json")}, sort_keys=True
    ).encode()
    fingerprint = hashlib.sha256(canonical).hexdigest()
    new_id = None
    if idempotency_key is not None:
        new_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.actor}\n{idempotency_key}")
    try:
        item, position = container.app.fork_item(
            source,
            body.stage,
            by,
            pipeline_version=body.pipeline_version,
            item_id=new_id,
            fingerprint=fingerprint,
        )
    except AlreadyExists:
        assert new_id is not None
        item = container.app.item(new_id, version=3)
        if item.fingerprint != fingerprint or item.forked_from is None:
            raise idempotency_mismatch() from None
        position = container.queries.event_position(new_id, 3)
    response.headers["Location"] = f"/v1/items/{item.id}"
    return {**item_from_aggregate(item, position), "forked_from": item.forked_from}
