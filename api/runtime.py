"""The running parts of one process, built from Settings by the composition root."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from eventsourcing.postgres import PostgresDatastore
from psycopg import Connection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from api.database import Database, resolve
from api.metrics import Metrics
from api.settings import Settings
from bus.advance import Bus
from bus.sweeper import LeaseSweeper
from domain.application import StateOwner, utc_now
from projections import queries
from projections.base import View
from projections.follower import Follower
from projections.item_status import READY_CHANNEL
from projections.maintenance import VIEWS
from projections.ready import ReadySignal

EVENTS_CHANNEL = queries.EVENTS_TABLE


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
        pre_ping=True,
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
            check=ConnectionPool.check_connection,
            open=True,
        )
        self.ready = ReadySignal(self.database.conninfo)
        self.bus = Bus(self.app)
        self.sweeper = LeaseSweeper(
            self.app, self.database.conninfo, settings.sweep_interval_seconds
        )
        self.sweeping = False
        self.followers: list[Follower] = []

    def _follower(self, handler: View | Bus) -> Follower:
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
            self.followers.extend(self._follower(view) for view in self.views.values())
        if bus:
            self.followers.append(self._follower(self.bus))
        for follower in self.followers:
            follower.start()
        if bus:
            self.sweeping = True
            self.sweeper.start()
        if ready_signal:
            self.ready.start()

    def _wake_listeners(self) -> None:
        """Stopping listeners wake now rather than at their next idle timeout."""
        try:
            with self.pool.connection(timeout=1) as conn:
                conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(EVENTS_CHANNEL)))
                conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(READY_CHANNEL)))
        except Exception:  # the database may be gone; the listeners then stop on their timeout
            return

    def follower(self, name: str) -> Follower | None:
        return next((f for f in self.followers if f.name == name), None)

    def close(self) -> None:
        for follower in self.followers:
            follower.request_stop()
        self.ready.request_stop()
        self.sweeper.request_stop()
        self._wake_listeners()
        for follower in self.followers:
            follower.stop()
        self.ready.stop()
        self.sweeper.stop()
        self.pool.close()
        self.datastore.close()
        self.app.close()
