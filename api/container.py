"""The composition root: every part of one stateowner process, built from Settings.

Constructing a Container does no I/O; `start()` connects (starting the embedded PostgreSQL when
no URL is set), creates the schema, opens the pools and starts the followers asked for; `close()`
stops and closes them all.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import anyio
import psycopg
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from psycopg import Connection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from api.auth import find_agent
from api.health import DatabaseHealth
from api.metrics import Metrics
from api.principals import KnownAgents
from api.settings import Settings
from bus.advance import Bus
from bus.claims import Claims
from bus.governor import Governor
from bus.scheduler import Scheduler
from bus.sweeper import LeaseSweeper
from bus.webhooks import FollowerWatchdog, Retries, WebhookSender
from domain.agent import Agent
from domain.application import StateOwner, utc_now
from domain.pipeline import SpecLimits
from projections.base import View, ViewGroup
from projections.follower import Follower, LogSource, notify
from projections.item_status import READY_CHANNEL
from projections.maintenance import VIEWS
from projections.poison import DeadLetters
from projections.queries import EVENTS_TABLE, Queries
from projections.ready import ReadySignal, RecentClaims
from projections.traces import TraceExport, traces_url
from projections.webhooks import WebhookOutbox, Webhooks
from store.database import Database, resolve
from store.log_recorder import AGENTS_CHANNEL

log = structlog.get_logger(__name__)

EVENTS_CHANNEL = EVENTS_TABLE
OPS_CONNECTIONS = 2
STARTUP_RETRY_SECONDS = 0.5
# What a database restarting, or not up yet, raises at start.
UNREACHABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OperationalError,
    InterfaceError,
    PoolTimeout,
)


BUS_GATHER_SECONDS = 0.1


class Container:
    """Database, application, views, read pool, claims, followers of one process."""

    database: Database
    app: StateOwner
    datastore: PostgresDatastore
    views: dict[str, View]
    dead_letters: DeadLetters
    pool: ConnectionPool[Connection[DictRow]]
    queries: Queries
    ops_queries: Queries
    ops_limiter: anyio.CapacityLimiter
    health: DatabaseHealth
    ready: ReadySignal
    known_agents: KnownAgents
    claims: Claims
    bus: Bus
    sweeper: LeaseSweeper
    scheduler: Scheduler
    outbox: WebhookOutbox
    webhooks: Webhooks

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.recent_claims = RecentClaims()
        self.followers: list[Follower] = []
        self.traces: TraceExport | None = None
        self.sender: WebhookSender | None = None
        self.watchdog: FollowerWatchdog | None = None
        self.started = False

    def start(
        self, *, projections: bool = False, bus: bool = False, ready_signal: bool = False
    ) -> Container:
        """Connect, create the schema and open the pools (the first time); then run the
        followers asked for here."""
        if not self.started:
            self._connect()
        if projections:
            group = ViewGroup(list(self.views.values()), self.dead_letters)
            self.followers.append(self._follower(group))
        if bus:
            self.followers.append(self._follower(self.bus))
            if self.settings.otlp_endpoint and self.traces is None:
                self.traces = self._trace_export(self.settings.otlp_endpoint)
                self.followers.append(self._follower(self.traces))
            if self.sender is None:
                self._start_webhooks()
        for follower in self.followers:
            if not follower.started:
                follower.start()
        if bus and not self.sweeper.started:
            self.sweeper.start()
        if bus and not self.scheduler.started:
            self.scheduler.start()
        if ready_signal and not self.ready.started:
            self.ready.start()
            self.known_agents.start()
        return self

    def _connect(self) -> None:
        settings = self.settings
        self.database = resolve(settings.database_url, settings.data_dir)
        self._create_schema_when_reachable()
        self.pool = ConnectionPool(
            self.database.conninfo,
            connection_class=Connection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1,
            max_size=settings.pool_size,
            timeout=5,
            open=True,
        )
        self.queries = Queries(self.pool)
        # Probes and metrics read through a pool and threads of their own, so they never queue
        # behind claims or any other request.
        self.ops_queries = Queries(
            ConnectionPool(
                self.database.conninfo,
                connection_class=Connection[DictRow],
                kwargs={"autocommit": True, "row_factory": dict_row},
                min_size=1,
                max_size=OPS_CONNECTIONS,
                timeout=2,
                open=True,
            )
        )
        self.ops_limiter = anyio.CapacityLimiter(OPS_CONNECTIONS)
        self.health = DatabaseHealth(self.database.conninfo, self._revive_pools)
        self.ready = ReadySignal(self.database.conninfo, self.pool, on_lost=self.health.lost)
        self.app.ready_listeners.append(self.ready.publish)
        self.known_agents = KnownAgents(self.database.conninfo)
        self.app.agent_listeners.append(self.known_agents.forget)
        self.claims = Claims(
            self.app,
            self.queries,
            self.ready,
            self.recent_claims,
            limiter=anyio.CapacityLimiter(settings.pool_size),
            max_waiting=settings.max_waiting_claims,
            max_waiting_per_agent=settings.max_waiting_claims_per_agent,
            count=lambda stage, result: self.metrics.claims.labels(stage, result).inc(),
        )
        governor = Governor(self.app, self.queries)
        self.bus = Bus(self.app, governor)
        self.sweeper = LeaseSweeper(
            self.app,
            self.queries,
            self.database.conninfo,
            settings.sweep_interval_seconds,
            governor,
        )
        self.scheduler = Scheduler(
            self.app, self.queries, self.database.conninfo, settings.schedule_grace_seconds
        )
        self.webhooks = Webhooks(self.pool)
        self.started = True

    def _create_schema_when_reachable(self) -> None:
        """A process may start while its database restarts or is still coming up beside it:
        it waits (bounded) instead of exiting at once."""
        deadline = time.monotonic() + self.settings.startup_wait_seconds
        while True:
            try:
                with self.database.schema_lock():
                    self._create_schema()
                return
            except UNREACHABLE as error:
                self._close_app()
                if time.monotonic() >= deadline:
                    raise
                log.warning("database_unreachable_at_start", error=str(error))
                time.sleep(STARTUP_RETRY_SECONDS)

    def _close_app(self) -> None:
        app = getattr(self, "app", None)
        if app is not None:
            with contextlib.suppress(Exception):
                app.close()

    def _create_schema(self) -> None:
        """The log, its application, the views, the dead letters and the outbox: built here and
        their tables created (those missing), under the schema lock."""
        settings = self.settings
        self.app = StateOwner(
            env=self.database.eventsourcing_env(settings.pool_size),
            clock=self.clock,
            spec_limits=SpecLimits(
                max_stages=settings.max_stages,
                max_routes=settings.max_routes,
                max_bytes=settings.max_spec_bytes,
            ),
            decide_at_once=settings.decide_at_once,
        )
        self.datastore = self.database.datastore(max(2, settings.pool_size // 2))
        self.views = {name: view(self.datastore) for name, view in VIEWS.items()}
        for view in self.views.values():
            view.create_table()
        self.dead_letters = DeadLetters(self.datastore)
        self.dead_letters.create_table()
        self.outbox = WebhookOutbox(self.datastore)
        self.outbox.create_table()

    def _start_webhooks(self) -> None:
        """The outbox follower (beside the bus: one active instance), the senders that post
        its deliveries, and the watchdog that raises FollowerStalled."""
        settings = self.settings
        self.sender = WebhookSender(
            self.webhooks,
            Retries(
                settings.webhook_max_attempts,
                settings.webhook_backoff_seconds,
                settings.webhook_max_backoff_seconds,
            ),
            settings.webhook_timeout_seconds,
            settings.webhook_workers,
            on_sent=lambda name, result: self.metrics.webhook_deliveries.labels(name, result).inc(),
        )
        self.outbox.on_written = self.sender.wake
        self.followers.append(self._follower(self.outbox))
        self.watchdog = FollowerWatchdog(
            lambda: list(self.followers),
            self.app.position,
            self.webhooks,
            settings.follower_stall_seconds,
            on_raised=self._stalled,
        )
        self.sender.start()
        self.watchdog.start()

    def _stalled(self) -> None:
        self.metrics.followers_stalled.inc()
        if self.sender is not None:
            self.sender.wake()

    def _trace_export(self, endpoint: str) -> TraceExport:
        # Imported here: only a process that exports traces loads the exporter and its HTTP stack.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=traces_url(endpoint), timeout=self.settings.otlp_timeout_seconds
        )
        traces = TraceExport(self.datastore, exporter, on_exported=self.metrics.spans_exported.inc)
        with self.database.schema_lock():
            traces.create_table()
        return traces

    def _follower(self, handler: ViewGroup | Bus | TraceExport | WebhookOutbox) -> Follower:
        log = LogSource(self.app.recorder, self.app.mapper, self.database.conninfo, EVENTS_CHANNEL)
        if isinstance(handler, ViewGroup):
            gather = self.settings.projections_gather_ms / 1000
        elif isinstance(handler, Bus) and self.settings.decide_at_once:
            gather = BUS_GATHER_SECONDS  # a backstop: it need not race a hand-off
        elif isinstance(handler, WebhookOutbox):
            gather = BUS_GATHER_SECONDS  # incidents need not race a hand-off either
        else:
            gather = 0.0
        # One active instance of each across processes. The bus and the exporter act outside
        # their own tables, so they must; views would only be safe twice (their tracking rows
        # are locked), but a second copy reads and decodes every batch to lose it. A collector
        # that cannot be reached delays traces; it does not make the service unready.
        return Follower(
            handler,
            log,
            exclusive=True,
            required=not isinstance(handler, TraceExport),
            gather_seconds=gather,
        )

    def _revive_pools(self) -> None:
        """Drop connections broken by an outage now, rather than one failed request at a time."""
        recorder = self.app.recorder
        assert isinstance(recorder, PostgresProcessRecorder)
        for pool in (self.pool, self.datastore.pool, recorder.datastore.pool):
            pool.check()

    def read_agent(self, agent_id: uuid.UUID) -> Agent | None:
        """The agent as the log has it now, remembered for the next request."""
        changes = self.known_agents.changes()
        agent = find_agent(self.app, agent_id)
        if agent is not None:
            self.known_agents.remember(agent, changes)
        return agent

    def follower(self, name: str) -> Follower | None:
        """The follower that keeps `name` (a view's name maps to the projections follower)."""
        wanted = ViewGroup.name if name in self.views else name
        return next((f for f in self.followers if f.name == wanted), None)

    def close(self) -> None:
        if not self.started:
            return
        self.claims.close()
        for follower in self.followers:
            follower.request_stop()
        if self.traces is not None:
            self.traces.close()
        for worker in (self.sender, self.watchdog):
            if worker is not None:
                worker.request_stop()
        self.ready.request_stop()
        self.known_agents.request_stop()
        self.sweeper.request_stop()
        self.scheduler.request_stop()
        self.health.stop()
        # Stopping listeners wake now rather than at their next idle timeout.
        notify(self.pool, EVENTS_CHANNEL, READY_CHANNEL, AGENTS_CHANNEL)
        for follower in self.followers:
            follower.stop()
        self.ready.stop()
        self.known_agents.stop()
        self.sweeper.stop()
        self.scheduler.stop()
        for worker in (self.sender, self.watchdog):
            if worker is not None:
                worker.stop()
        self.pool.close()
        self.ops_queries.pool.close()
        self.datastore.close()
        self.app.close()
