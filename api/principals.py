"""The agents that call this process, kept in memory, and dropped the moment any process changes
one: a request is authenticated without a database read or a trip through the thread pool."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import structlog
from psycopg import sql

from domain.agent import Agent
from projections.background import Background
from store.log_recorder import AGENTS_CHANNEL

log = structlog.get_logger(__name__)

# Should a change's notice be lost without the connection failing (a silent network
# partition), a remembered agent still lasts no longer than this.
REMEMBER_SECONDS = 5.0
MAX_REMEMBERED = 10_000


class KnownAgents(Background):
    """Agents as they stood when last read. Every append that changes an agent NOTIFYs its id
    in the same transaction (store/log_recorder.py); this listener forgets that agent at once.
    While the listener is not connected nothing is remembered: every caller is read afresh."""

    thread_name = "known-agents"
    join_seconds = 5.0

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self.conninfo = conninfo
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._agents: dict[uuid.UUID, tuple[Agent, float]] = {}
        self._changes = 0

    def get(self, agent_id: uuid.UUID) -> Agent | None:
        with self._lock:
            remembered = self._agents.get(agent_id)
        if remembered is None or not self.connected.is_set():
            return None
        agent, until = remembered
        return agent if time.monotonic() < until else None

    def changes(self) -> int:
        """A count of the changes heard so far: read it before reading an agent to remember."""
        with self._lock:
            return self._changes

    def remember(self, agent: Agent, changes_before_read: int) -> None:
        """Keep an agent read from the log, unless a change was heard since the read began
        (what was read may predate it)."""
        with self._lock:
            if not self.connected.is_set() or self._changes != changes_before_read:
                return
            if len(self._agents) >= MAX_REMEMBERED:
                self._agents.clear()
            self._agents[agent.id] = (agent, time.monotonic() + REMEMBER_SECONDS)

    def forget(self, agent_id: uuid.UUID | None = None) -> None:
        """Drop one agent (None: every agent)."""
        with self._lock:
            self._changes += 1
            if agent_id is None:
                self._agents.clear()
            else:
                self._agents.pop(agent_id, None)

    def _heard(self, payload: str) -> None:
        try:
            self.forget(uuid.UUID(payload))
        except ValueError:
            self.forget()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(AGENTS_CHANNEL)))
                    self.forget()  # whatever changed while nobody listened
                    self.connected.set()
                    backoff = 0.1
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=1.0, stop_after=1):
                            self._heard(notice.payload)
            except Exception as error:  # reconnect; meanwhile callers are read afresh
                log.warning("known_agents_lost", error=str(error))
            finally:
                self.connected.clear()
                self.forget()
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)
