"""Followers tail the global log: wake on NOTIFY, process in batches, resume from tracking."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
import structlog
from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification, StoredEvent
from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.background import Background
from projections.base import PositionMoved

log = structlog.get_logger(__name__)

BATCH_SIZE = 500
IDLE_WAKE_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 5.0
STANDBY_RETRY_SECONDS = 0.5


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, derived from a name."""
    digest = hashlib.sha256(f"stateowner:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def notify(pool: ConnectionPool[Any], *channels: str) -> None:
    """NOTIFY the channels now; when the database is gone, listeners find out by themselves."""
    try:
        with pool.connection(timeout=1) as conn:
            for channel in channels:
                conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(channel)))
    except Exception as error:  # a wake-up is a courtesy: the listeners also wake on a timeout
        log.debug("notify_failed", channels=channels, error=str(error))


def try_advisory_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    """Take the session-level lock on this connection; it lasts as long as the connection."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_lock_key(name),)).fetchone()
    return bool(row and row[0])


class BatchHandler(Protocol):
    @property
    def name(self) -> str: ...

    def position(self) -> int: ...

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None: ...


@dataclass
class FollowerState:
    position: int = 0
    running: bool = False
    error: str | None = None
    failures: int = 0
    standby: bool = False


class UnreadableEvent(Exception):
    """A stored event this release cannot read back (a failing upcaster, a damaged state)."""


def decode(mapper: Mapper[Any], stored: StoredEvent, position: int) -> Any:
    """The domain event a stored one holds; a failure names the event's type and position."""
    try:
        return mapper.to_domain_event(stored)
    except Exception as error:
        raise UnreadableEvent(
            f"the {stored.topic} event at position {position} cannot be read: "
            f"{type(error).__name__}: {error}"
        ) from error


def read_batch(
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    after: int,
    limit: int,
    stop: int | None = None,
) -> list[tuple[Any, int]]:
    notifications: Sequence[Notification] = recorder.select_notifications(
        start=after, limit=limit, stop=stop, inclusive_of_start=False
    )
    return [(decode(mapper, n, n.id), n.id) for n in notifications]


@dataclass(frozen=True)
class LogSource:
    """Where followers read the log: its recorder and mapper, and the channel that wakes them."""

    recorder: ApplicationRecorder
    mapper: Mapper[Any]
    conninfo: str
    channel: str


class Follower(Background):
    """Runs one handler over the log in a thread, supervised: errors are retried with backoff
    and shown in `state`, never silently swallowed; a dead LISTEN connection is reopened."""

    def __init__(
        self,
        handler: BatchHandler,
        log: LogSource,
        exclusive: bool = False,
        required: bool = True,
        gather_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.log = log
        self.exclusive = exclusive
        # Whether the process is ready only while this follower runs (see /readyz).
        self.required = required
        # Woken from idle, wait this long before reading, so that the writes of a hand-off
        # (a report, the claim it wakes) are done first and come as one batch.
        self.gather_seconds = gather_seconds
        self.thread_name = f"follower-{handler.name}"
        self._holds_lock = False
        self.state = FollowerState()
        self._listener: psycopg.Connection[Any] | None = None

    @property
    def name(self) -> str:
        return self.handler.name

    def stop(self) -> None:
        super().stop()
        self._close_listener()

    def _listen(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self.log.conninfo, autocommit=True, connect_timeout=5)
            self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.log.channel)))
        return self._listener

    def _close_listener(self) -> None:
        self._holds_lock = False
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None

    def _is_active(self, listener: psycopg.Connection[Any]) -> bool:
        """One active instance per exclusive follower; the others wait as hot standbys."""
        if not self.exclusive or self._holds_lock:
            return True
        self._holds_lock = try_advisory_lock(listener, self.name)
        if self._holds_lock and self.state.standby:
            log.info("follower_took_over", follower=self.name)
        self.state.standby = not self._holds_lock
        return self._holds_lock

    def _wait_for_news(self) -> None:
        listener = self._listen()
        for _ in listener.notifies(timeout=IDLE_WAKE_SECONDS, stop_after=1):
            if self.gather_seconds:
                self._stopping.wait(self.gather_seconds)

    def _recovered(self, position: int) -> None:
        if self.state.error is not None:
            log.info("follower_recovered", follower=self.name, position=position)
            self.state.error = None

    def _run(self) -> None:
        self.state.running = True
        backoff = 0.05
        known: int | None = None  # the position in memory; re-read from tracking when in doubt
        while not self._stopping.is_set():
            try:
                listener = (
                    self._listen()
                )  # before reading, so no NOTIFY slips between read and wait
                if not self._is_active(listener):
                    known = None
                    self._stopping.wait(STANDBY_RETRY_SECONDS)
                    continue
                after = self.handler.position() if known is None else known
                batch = read_batch(self.log.recorder, self.log.mapper, after, BATCH_SIZE)
                if batch:
                    try:
                        self.handler.process_batch(batch, after)
                    except PositionMoved:
                        known = None
                        continue
                    known = batch[-1][1]
                    self.state.position = known
                    self._recovered(after)
                    backoff = 0.05
                    continue
                # Idle: a view resumed behind us (an operator skipped its dead letter) is caught
                # up before waiting.
                resumed = self.handler.position()
                if resumed < after:
                    known = resumed
                    continue
                known = after
                self.state.position = after
                self._recovered(after)
                backoff = 0.05
                self._wait_for_news()
            except Exception as error:  # a follower must outlive any one failure, visibly
                known = None
                self.state.error = f"{type(error).__name__}: {error}"
                self.state.failures += 1
                log.error("follower_failed", follower=self.name, error=self.state.error)
                self._close_listener()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self.state.running = False
