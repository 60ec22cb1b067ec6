"""The live feed behind `GET /v1/stream`: Server-Sent Events of the global log.

One LISTEN connection per process (a daemon thread) tells every open stream that the log grew;
a stream is an async generator that waits on that signal without holding a thread, reads at most
one batch after its position in a worker thread, and reads the next only once that batch has been
sent — so a slow reader holds one batch, never more (uvicorn's flow control makes `send` wait for
the client).
"""

from __future__ import annotations

import asyncio
import uuid
from asyncio import FIRST_COMPLETED
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import psycopg
import structlog
from psycopg import sql
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.presenters import event_body
from api.schemas import EventOut
from domain.item import Item
from domain.topic import Topic
from projections.background import Background

log = structlog.get_logger(__name__)

BATCH = 200
TOPIC_CACHE = 10_000
POLL_SECONDS = 1.0


class LogWatch(Background):
    """Wakes every open stream of this process when the log grows (NOTIFY on the log's channel);
    while its connection is down the streams poll instead."""

    thread_name = "log-watch"
    join_seconds = 3.0

    def __init__(self, conninfo: str, channel: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.conninfo = conninfo
        self.channel = channel
        self.loop = loop
        self.listening = False
        self.changed = asyncio.Event()
        self.closing = asyncio.Event()

    def _wake(self) -> None:
        # A new Event per change: a stream holds the one current before it read, so a change
        # that lands during its read is never missed.
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every open stream (from any thread), then stop listening."""
        self.loop.call_soon_threadsafe(self.closing.set)
        self.request_stop()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening = True
                    backoff = 0.1
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.loop.call_soon_threadsafe(self._wake)
            except Exception as error:  # the streams poll meanwhile; retry with backoff
                log.warning("log_watch_lost", error=str(error))
            finally:
                self.listening = False
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)


class TooManyStreams(Exception):
    pass


@dataclass
class StreamHub:
    """The process's open streams: their cap, and the watch that wakes them."""

    max_streams: int
    keepalive_seconds: float
    open: int = 0
    watch: LogWatch | None = None

    def admit(self) -> None:
        if self.open >= self.max_streams:
            raise TooManyStreams
        self.open += 1

    def release(self) -> None:
        self.open -= 1

    def started_watch(self, conninfo: str, channel: str) -> LogWatch:
        if self.watch is None:
            self.watch = LogWatch(conninfo, channel, asyncio.get_running_loop())
            self.watch.start()
        return self.watch

    def close(self) -> None:
        """End every open stream (safe from a signal handler or any thread)."""
        if self.watch is not None:
            self.watch.close()


Reader = Callable[[int, int], Sequence[tuple[Any, int]]]


@dataclass
class StreamFilter:
    """Which events a stream sends: by type, by item, by the topic of their item (or topic)."""

    types: frozenset[str] = frozenset()
    item: uuid.UUID | None = None
    topic: str | None = None
    topic_of: Callable[[uuid.UUID], str | None] = lambda _: None
    _topics: OrderedDict[uuid.UUID, str | None] = field(default_factory=OrderedDict)

    def _item_topic(self, event: Any) -> str | None:
        item_id = event.originator_id
        if isinstance(event, Item.ItemCreated):
            self._topics[item_id] = event.topic
        if item_id not in self._topics:
            self._topics[item_id] = self.topic_of(item_id)
            if len(self._topics) > TOPIC_CACHE:
                self._topics.popitem(last=False)
        return self._topics[item_id]

    def admits(self, event: Any) -> bool:
        if self.types and type(event).__name__ not in self.types:
            return False
        if self.item is not None and event.originator_id != self.item:
            return False
        if self.topic is not None:
            if isinstance(event, Item.Event):
                return self._item_topic(event) == self.topic
            return isinstance(event, Topic.Event) and event.originator_id == Topic.create_id(
                self.topic
            )
        return True


class CountedStream(StreamingResponse):
    """A stream that gives its place back when it ends, however it ends (even before its first
    byte, when the client is gone already)."""

    def __init__(self, content: AsyncIterator[str], hub: StreamHub) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.release()


def sse(event: Any, position: int) -> str:
    # The same body, field for field, as /v1/events gives.
    body = EventOut.model_validate(event_body(event, position)).model_dump_json()
    # No `event:` field: EventSource hands every event to onmessage; the type is in the data.
    return f"id: {position}\ndata: {body}\n\n"


async def event_stream(
    hub: StreamHub,
    watch: LogWatch,
    read: Reader,
    after: int,
    admits: Callable[[Any], bool],
) -> AsyncIterator[str]:
    """Events after `after` that `admits` lets through, then each new one as it is appended;
    a comment when idle for the keep-alive interval; ends when the process closes."""

    def next_chunk(position: int) -> tuple[int, str]:
        """In a worker thread: one batch read, filtered (which may read items) and encoded."""
        batch = read(position, BATCH)
        if not batch:
            return position, ""
        return batch[-1][1], "".join(sse(event, at) for event, at in batch if admits(event))

    yield f"retry: 2000\n: stream after {after}\n\n"
    loop = asyncio.get_running_loop()
    position = after
    last_sent = loop.time()
    while not watch.closing.is_set():
        changed = watch.changed
        reached, chunk = await anyio.to_thread.run_sync(next_chunk, position)
        if reached > position:
            position = reached
            if chunk:
                last_sent = loop.time()
                yield chunk
            continue
        quiet = loop.time() - last_sent
        if quiet >= hub.keepalive_seconds:
            last_sent = loop.time()
            yield ": keep-alive\n\n"
            continue
        wait = hub.keepalive_seconds - quiet
        if not watch.listening:
            wait = min(wait, POLL_SECONDS)
        waits = {
            asyncio.ensure_future(watch.closing.wait()),
            asyncio.ensure_future(changed.wait()),
        }
        _, pending = await asyncio.wait(waits, timeout=wait, return_when=FIRST_COMPLETED)
        for task in pending:
            task.cancel()
