"""Fixtures for the agents' SDK: one real `stateowner serve` per test module, on a database of
its own, and small helpers that wait for the service's state to show what a test expects."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stateowner_client import Client
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveService

T = TypeVar("T")


def fresh_database(server_conninfo: str) -> tuple[str, Callable[[], None]]:
    """A database for one server's lifetime, and how to drop it."""
    name = f"stateowner_sdk_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(server_conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return make_conninfo(server_conninfo, dbname=name), drop


@pytest.fixture(scope="module")
def live(server_conninfo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """One server for the module: its tests keep apart by their own pipeline, stage and agent
    names. The sweeper runs often, so a lease left to expire would show within the test."""
    url, drop = fresh_database(server_conninfo)
    service = LiveService(
        url, tmp_path_factory.mktemp("sdk-serve"), {"STATEOWNER_SWEEP_INTERVAL_SECONDS": "0.2"}
    )
    service.serve()
    try:
        yield service
    finally:
        service.stop_all()
        drop()


@pytest.fixture
def admin(live: LiveService) -> Iterator[Client]:
    with Client(live.base, ADMIN_TOKEN) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30) -> T:
    """Poll until `check` answers something truthy; fail naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_for_status(client: Client, item_id: str, *statuses: str, timeout: float = 30) -> str:
    return wait_for(
        f"item {item_id} to be {' or '.join(statuses)}",
        lambda: (status := client.get_item(item_id).status) in statuses and status,
        timeout,
    )
