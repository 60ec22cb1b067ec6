from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api.container import Container
from api.settings import Settings

pytestmark = pytest.mark.integration

PROCESSES = 6


def test_processes_starting_together_on_an_empty_database_all_come_up(settings: Settings) -> None:
    """Six service processes started at the same instant on an empty database each create the
    schema they find missing, and none fails on another's half-made table."""
    # Small pools: six processes' connections must fit the server's beside everything else.
    small = settings.model_copy(update={"pool_size": 2})
    barrier = threading.Barrier(PROCESSES)
    failures: list[BaseException] = []
    started: list[Container] = []
    lock = threading.Lock()

    def start() -> None:
        barrier.wait()
        try:
            container = Container(small).start()
        except BaseException as error:  # every failure is the finding
            with lock:
                failures.append(error)
            return
        with lock:
            started.append(container)

    threads = [threading.Thread(target=start) for _ in range(PROCESSES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert failures == []
        assert len(started) == PROCESSES
        assert started[0].app.position() == 0
    finally:
        for container in started:
            container.close()


def _database_named(url: str, name: str) -> str:
    return make_conninfo(url, dbname=name)


def test_a_process_started_before_its_database_exists_waits_for_it(
    settings: Settings, server_conninfo: str
) -> None:
    """A process started while its database cannot be reached yet retries, and comes up once
    the database is there."""
    name = f"stateowner_late_{uuid.uuid4().hex[:8]}"
    late = settings.model_copy(
        update={"database_url": _database_named(server_conninfo, name), "startup_wait_seconds": 60}
    )

    def create_later() -> None:
        time.sleep(1.5)
        with psycopg.connect(server_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    creator = threading.Thread(target=create_later)
    creator.start()
    try:
        container = Container(late).start()
        try:
            assert container.app.position() == 0
        finally:
            container.close()
    finally:
        creator.join()
        with psycopg.connect(server_conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_a_process_whose_database_stays_unreachable_gives_up_after_its_wait(
    settings: Settings, server_conninfo: str
) -> None:
    """With no database to be found, start gives up once its wait is over, with the driver's
    error."""
    missing = settings.model_copy(
        update={
            "database_url": _database_named(server_conninfo, "stateowner_never_created"),
            "startup_wait_seconds": 1,
        }
    )
    started = time.monotonic()
    with pytest.raises((psycopg.OperationalError, OperationalError)):
        Container(missing).start()
    assert 1 <= time.monotonic() - started < 30
