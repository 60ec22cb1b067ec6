"""The running parts of one process, built from Settings by the composition root."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime

import structlog
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from psycopg import Connection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from api.database import Database, resolve
from api.health import DatabaseHealth
from api.metrics import Metrics
from api.settings import Settings
from bus.advance import Bus
from bus.governor import Governor
from bus.sweeper import LeaseSweeper
from domain.application import StateOwner, utc_now
from projections import queries
from projections.base import View, ViewGroup
from projections.follower import Follower
from projections.item_status import READY_CHANNEL
from projections.maintenance import VIEWS
from projections.ready import ReadySignal, RecentClaims, ready_payload

EVENTS_CHANNEL = queries.EVENTS_TABLE
log = structlog.get_logger(__name__)


def views_datastore(database: Database, pool_size: int) -> PostgresDatastore:
    parts = database.parts
    return PostgresDatastore(
        dbname=str(parts.get("dbname", "postgres")),
        host=str(parts.get("host", "localhost")),
        port=str(parts.get("port", "5432")),
        user=str(parts.get("user", "postgres")),
        password=str(parts.get("password", "")),
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_timeout=5,
    )


class Runtime:
    """Database, application, views, followers and the read pool of one process."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.started_at = time.time()
        self.database = resolve(settings.database_url, settings.data_dir)
        self.app = StateOwner(env=self.database.eventsourcing_env(settings.pool_size), clock=clock)
        self.datastore = views_datastore(self.database, max(2, settings.pool_size // 2))
        self.views: dict[str, View] = {name: view(self.datastore) for name, view in VIEWS.items()}
        for view in self.views.values():
            view.create_table()
        self.pool: ConnectionPool[Connection[DictRow]] = ConnectionPool(
            self.database.conninfo,
            connection_class=Connection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1,
            max_size=settings.pool_size,
            timeout=5,
            open=True,
        )
        self.health = DatabaseHealth(self.database.conninfo, self._revive_pools)
        self.ready = ReadySignal(self.database.conninfo, on_lost=self.health.lost)
        self.recent_claims = RecentClaims()
        self.app.ready_listeners.append(self._publish_ready)
        self.governor = Governor(self.app, self.database.conninfo)
        self.bus = Bus(self.app, self.governor)
        self.sweeper = LeaseSweeper(
            self.app,
            self.database.conninfo,
            settings.sweep_interval_seconds,
            Governor(self.app, self.database.conninfo),  # its own connection: its own thread
        )
        self.sweeping = False
        self.followers: list[Follower] = []

    def _follower(self, handler: ViewGroup | Bus) -> Follower:
        return Follower(
            handler,
            self.app.recorder,
            self.app.mapper,
            self.database.conninfo,
            EVENTS_CHANNEL,
            exclusive=isinstance(handler, Bus),
        )

    def start(self, *, projections: bool, bus: bool, ready_signal: bool = True) -> None:
        if projections:
            self.followers.append(self._follower(ViewGroup(list(self.views.values()))))
        if bus:
            self.followers.append(self._follower(self.bus))
        for follower in self.followers:
            follower.start()
        if bus:
            self.sweeping = True
            self.sweeper.start()
        if ready_signal:
            self.ready.start()

    def _publish_ready(self, stage: str, item_id: uuid.UUID) -> None:
        """Tell waiting claims in every process which item just became ready (a hint only:
        claims still find it through item_status if this NOTIFY is lost)."""
        self.ready.signal(stage, item_id)
        try:
            with self.pool.connection(timeout=1) as conn:
                conn.execute(
                    "SELECT pg_notify(%s, %s)",
                    (READY_CHANNEL, ready_payload(stage, item_id, self.ready.origin)),
                )
        except Exception as error:
            log.warning("ready_hint_lost", stage=stage, error=str(error))

    def _revive_pools(self) -> None:
        """Drop connections broken by an outage now, rather than one failed request at a time."""
        recorder = self.app.recorder
        assert isinstance(recorder, PostgresProcessRecorder)
        for pool in (self.pool, self.datastore.pool, recorder.datastore.pool):
            pool.check()

    def _wake_listeners(self) -> None:
        """Stopping listeners wake now rather than at their next idle timeout."""
        try:
            with self.pool.connection(timeout=1) as conn:
                conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(EVENTS_CHANNEL)))
                conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(READY_CHANNEL)))
        except Exception:  # the database may be gone; the listeners then stop on their timeout
            return

    def follower(self, name: str) -> Follower | None:
        """The follower that keeps `name` (a view's name maps to the projections follower)."""
        wanted = ViewGroup.name if name in self.views else name
        return next((f for f in self.followers if f.name == wanted), None)

    def close(self) -> None:
        for follower in self.followers:
            follower.request_stop()
        self.ready.request_stop()
        self.sweeper.request_stop()
        self.health.stop()
        self._wake_listeners()
        for follower in self.followers:
            follower.stop()
        self.ready.stop()
        self.sweeper.stop()
        self.governor.close()
        if self.sweeper.governor is not None:
            self.sweeper.governor.close()
        self.pool.close()
        self.datastore.close()
        self.app.close()
