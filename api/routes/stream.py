"""`GET /v1/stream`: the global log as Server-Sent Events, for auditors and above."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, authenticate
from api.console.session import SESSION_COOKIE, Sessions
from api.container import EVENTS_CHANNEL, Container
from api.deps import ContainerDep, request_context
from api.errors import Problem, forbidden, unauthorized, validation
from api.openapi import problems
from api.stream import CountedStream, StreamFilter, StreamHub, TooManyStreams, event_stream
from domain.agent import Role
from domain.errors import NotFound
from projections.follower import read_batch

router = APIRouter(tags=["log"])

EventType = Annotated[str, Query(max_length=100, pattern=r"^[A-Za-z]+$")]


def stream_reader(
    request: Request,
    container: ContainerDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    """A bearer token, or the console's session cookie (the console's pages read the feed)."""
    sessions: Sessions = request.app.state.sessions
    if authorization:
        admin_token = container.settings.admin_token
        principal = authenticate(
            authorization, container.app, admin_token.get_secret_value() if admin_token else None
        )
    else:
        session = sessions.read(request.cookies.get(SESSION_COOKIE), container.clock())
        found = sessions.principal(session, container.app) if session else None
        if found is None:
            raise unauthorized("send Authorization: Bearer TOKEN")
        principal = found
    request_context(request)["principal"] = principal.actor
    if not principal.has(Role.AUDITOR):
        raise forbidden(f"the stream needs the role auditor; you are {principal.role}")
    return principal


def _topic_of(container: Container) -> Any:
    def topic_of(item_id: uuid.UUID) -> str | None:
        try:
            return container.app.item(item_id, version=1).topic
        except NotFound:
            return None

    return topic_of


def _start(last_event_id: str | None, after: int | None) -> int | None:
    """Resume right after Last-Event-ID (a reconnecting EventSource sends it), else after=;
    None: from the log's head, live events only."""
    if last_event_id is not None:
        text = last_event_id.strip()
        if not text.isdigit() or len(text) > 18:
            raise validation(f"Last-Event-ID must be a log position, not {last_event_id!r}")
        return int(text)
    return after


@router.get(
    "/v1/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "an endless stream",
        },
        **problems(),
    },
)
async def stream(
    request: Request,
    container: ContainerDep,
    principal: Annotated[Principal, Depends(stream_reader)],
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    type: Annotated[list[EventType] | None, Query(max_length=50)] = None,
    item: uuid.UUID | None = None,
    topic: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """The log's events after a position (`after`, or `Last-Event-ID` to resume; neither: from
    now on), then each new one as it is appended; `id:` is the position. Filter by `type` (repeatable), `item`, `topic`.
    A comment every keep-alive interval while idle; 503 beyond the cap on open streams."""
    start = _start(last_event_id, after)
    if start is None:
        start = await run_in_threadpool(container.app.position)
    hub: StreamHub = request.app.state.streams
    watch = hub.started_watch(container.database.conninfo, EVENTS_CHANNEL)
    app = container.app
    admits = StreamFilter(
        types=frozenset(type or ()), item=item, topic=topic, topic_of=_topic_of(container)
    ).admits

    def read(position: int, limit: int) -> list[tuple[Any, int]]:
        return read_batch(app.recorder, app.mapper, position, limit)

    try:
        hub.admit()
    except TooManyStreams:
        raise Problem(
            503,
            "unavailable",
            "Too many streams",
            f"this process serves at most {hub.max_streams} streams at once; try again later",
            headers={"Retry-After": "5"},
        ) from None
    return CountedStream(event_stream(hub, watch, read, start, admits), hub)
