from __future__ import annotations

import threading

import pytest

from api.container import Container
from api.settings import Settings

pytestmark = pytest.mark.integration

PROCESSES = 6


def test_processes_starting_together_on_an_empty_database_all_come_up(settings: Settings) -> None:
    """Six service processes started at the same instant on an empty database each create the
    schema they find missing, and none fails on another's half-made table."""
    barrier = threading.Barrier(PROCESSES)
    failures: list[BaseException] = []
    started: list[Container] = []
    lock = threading.Lock()

    def start() -> None:
        barrier.wait()
        try:
            container = Container(settings).start()
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
