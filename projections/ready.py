"""Wakes waiting claims the moment item_status makes a stage ready, in any process."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.background import Background
from projections.item_status import READY_CHANNEL

log = structlog.get_logger(__name__)

HINT_SEPARATOR = "\n"
MAX_HINTS = 10_000


def ready_payload(stage: str, item_id: uuid.UUID, origin: str) -> str:
    return HINT_SEPARATOR.join((stage, str(item_id), origin))


@dataclass(eq=False)
class _Waiter:
    """A claim waiting on the event loop: waking it costs no thread."""

    loop: asyncio.AbstractEventLoop
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    called: bool = False

    def wake(self) -> None:
        self.called = True
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.woken.set)


class ReadySignal(Background):
    """One LISTEN connection per process. Waiting claims queue per stage on the event loop; each
    signal (a stage made ready, with the item when known) wakes the longest waiting one only, so
    a thousand idle claims cost no threads and no database work until there is work to claim."""

    thread_name = "ready-signal"
    join_seconds = 5.0

    def __init__(
        self,
        conninfo: str,
        pool: ConnectionPool[Any],
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.conninfo = conninfo
        self.pool = pool
        self.on_lost = on_lost
        # Hints this process published reach its waiters directly; their NOTIFY echo is skipped.
        self.origin = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._hints: dict[str, deque[uuid.UUID]] = {}
        self._waiters: dict[str, deque[_Waiter]] = {}
        self.connected = threading.Event()

    def generation(self, stage: str) -> int:
        with self._lock:
            return self._generations.get(stage, 0)

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._waiters.values())

    async def wait(self, stage: str, seen: int, timeout: float) -> bool:
        """Wait until `stage` is signalled after generation `seen` (True), or the timeout passes
        (False). A wake that comes as the timeout passes is handed on, never lost."""
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            if self._generations.get(stage, 0) != seen:
                return True
            self._waiters.setdefault(stage, deque()).append(waiter)
        try:
            await asyncio.wait_for(waiter.woken.wait(), timeout)
            return True
        except TimeoutError:
            with self._lock:
                if waiter.called:
                    self._wake_one(stage)
                else:
                    self._waiters[stage].remove(waiter)
            return False

    def signal(self, stage: str, item_id: uuid.UUID | None = None) -> None:
        """A stage became ready (the item, when known): wake one waiter of it."""
        with self._lock:
            if item_id is not None:
                self._hints.setdefault(stage, deque(maxlen=MAX_HINTS)).append(item_id)
            self._generations[stage] = self._generations.get(stage, 0) + 1
            self._wake_one(stage)

    def nudge(self, stage: str) -> None:
        """Wake one more waiter: there may be more work at the stage than was signalled, or the
        waiter woken for it could not take it."""
        with self._lock:
            self._wake_one(stage)

    def wake_all(self) -> None:
        """Wake every waiter: the process is stopping."""
        with self._lock:
            for queue in self._waiters.values():
                while queue:
                    queue.popleft().wake()

    def _wake_one(self, stage: str) -> None:
        queue = self._waiters.get(stage)
        if queue:
            queue.popleft().wake()

    def publish(self, stage: str, item_id: uuid.UUID) -> None:
        """Tell waiting claims in every process which item just became ready (a hint only:
        claims still find it through item_status if this NOTIFY is lost)."""
        self.signal(stage, item_id)
        try:
            with self.pool.connection(timeout=1) as conn:
                conn.execute(
                    "SELECT pg_notify(%s, %s)",
                    (READY_CHANNEL, ready_payload(stage, item_id, self.origin)),
                )
        except Exception as error:
            log.warning("ready_hint_lost", stage=stage, error=str(error))

    def take_hint(self, stage: str) -> uuid.UUID | None:
        """An item just made ready at `stage`, handed to one waiter only; None when there is none."""
        with self._lock:
            hints = self._hints.get(stage)
            return hints.popleft() if hints else None

    def on_notify(self, payload: str) -> None:
        stage, _, rest = payload.partition(HINT_SEPARATOR)
        item, _, origin = rest.partition(HINT_SEPARATOR)
        if origin == self.origin:
            return
        try:
            item_id = uuid.UUID(item) if item else None
        except ValueError:
            item_id = None
        self.signal(stage, item_id)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(READY_CHANNEL)))
                    self.connected.set()
                    backoff = 0.1
                    while not self._stopping.is_set():
                        for notify in conn.notifies(timeout=1.0, stop_after=1):
                            self.on_notify(notify.payload)
            except Exception as error:  # reconnect: waiting claims fall back to their timeouts
                self.connected.clear()
                log.warning("ready_signal_lost", error=str(error))
                if self.on_lost is not None and not self._stopping.is_set():
                    self.on_lost(str(error))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)


class RecentClaims:
    """Items this process claimed moments ago, with the version their claim reached: until
    item_status shows that version, claimers pass over the row instead of loading the item
    to find it taken."""

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._claims: dict[uuid.UUID, tuple[int, float]] = {}

    def add(self, item_id: uuid.UUID, version: int) -> None:
        with self._lock:
            self._claims[item_id] = (version, time.monotonic() + self.ttl_seconds)

    def current(self) -> dict[uuid.UUID, int]:
        now = time.monotonic()
        with self._lock:
            expired = [item for item, (_, until) in self._claims.items() if until <= now]
            for item in expired:
                del self._claims[item]
            return {item: version for item, (version, _) in self._claims.items()}
