"""Crashes and rivals: real `stateowner` processes under load, killed and doubled up, and every
item's history still shows exactly one decision per completion and one ItemCompleted."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import AgentLoop, LiveService, Process, check_invariants, history

pytestmark = pytest.mark.integration

STAGES = ["research", "draft", "edit", "publish"]
SPEC = {
    "stages": [
        {"name": stage, "lease_seconds": 3, "retry_backoff_seconds": 0.1} for stage in STAGES
    ]
}


@pytest.fixture
def service(clean_database: str, tmp_path: Path) -> Iterator[LiveService]:
    live = LiveService(clean_database, tmp_path, {"STATEOWNER_SWEEP_INTERVAL_SECONDS": "0.2"})
    try:
        yield live
    finally:
        live.stop_all()


def _prepare(service: LiveService, items: int) -> tuple[list[str], dict[str, str]]:
    with service.client() as admin:
        assert admin.put("/v1/pipelines/article", json=SPEC).status_code == 200
        tokens = {}
        for stage in STAGES:
            for n in range(2):
                name = f"{stage}-{n}"
                response = admin.post(
                    "/v1/agents", json={"name": name, "role": "agent", "stages": [stage]}
                )
                tokens[name] = response.json()["token"]
        ids = []
        for n in range(items):
            response = admin.post(
                "/v1/items", json={"pipeline": "article", "topic": "load", "title": f"#{n}"}
            )
            assert response.status_code == 201
            ids.append(response.json()["id"])
    return ids, tokens


def _agents(service: LiveService, tokens: dict[str, str], stop: threading.Event) -> list[AgentLoop]:
    loops = [
        AgentLoop(service, token, name.rsplit("-", 1)[0], stop) for name, token in tokens.items()
    ]
    for loop in loops:
        loop.start()
    return loops


def _done_count(admin: httpx.Client) -> int:
    try:
        response = admin.get("/v1/items", params={"status": "done", "limit": 500})
    except httpx.TransportError:
        return -1
    return len(response.json()["items"]) if response.status_code == 200 else -1


def _wait_until_done(admin: httpx.Client, total: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while _done_count(admin) < total:
        assert time.monotonic() < deadline, f"only {_done_count(admin)} of {total} done"
        time.sleep(0.2)


def _wait_until_caught_up(admin: httpx.Client, timeout: float = 30) -> None:
    """Every follower reaches the head after the restart (the backstop bus reads a moment after
    its wake, so the last events may still be on their way to it)."""
    deadline = time.monotonic() + timeout
    while True:
        lagging = {s["name"]: s["lag"] for s in admin.get("/v1/projections").json() if s["lag"]}
        if not lagging:
            return
        assert time.monotonic() < deadline, f"still behind the log: {lagging}"
        time.sleep(0.1)


def _check_every_item(admin: httpx.Client, ids: list[str]) -> None:
    for item_id in ids:
        check_invariants(history(admin, item_id))


def test_concurrent_agents_over_dozens_of_items_advance_each_exactly_once(
    service: LiveService,
) -> None:
    """Eight agents on threads carry forty items through four stages; every history is exact."""
    service.serve()
    ids, tokens = _prepare(service, items=40)
    stop = threading.Event()
    loops = _agents(service, tokens, stop)
    with service.client() as admin:
        _wait_until_done(admin, len(ids))
        stop.set()
        for loop in loops:
            loop.join(10)
        _check_every_item(admin, ids)
    assert sum(loop.completed for loop in loops) == 4 * len(ids)


def test_a_serve_killed_mid_load_restarts_and_loses_or_doubles_nothing(
    service: LiveService,
) -> None:
    """SIGKILL the only server while agents work, start it again on the same database, finish."""
    server = service.serve()
    ids, tokens = _prepare(service, items=30)
    stop = threading.Event()
    loops = _agents(service, tokens, stop)
    with service.client() as admin:
        deadline = time.monotonic() + 60
        while _done_count(admin) < len(ids) // 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.kill()
        time.sleep(0.5)
        service.serve()
        _wait_until_done(admin, len(ids))
        stop.set()
        for loop in loops:
            loop.join(10)
        _check_every_item(admin, ids)
        _wait_until_caught_up(admin)
    assert sum(loop.transport_errors for loop in loops) > 0, "the kill was felt by the agents"


def test_two_bus_workers_never_double_dispatch_and_the_standby_takes_over(
    service: LiveService,
) -> None:
    """Two `worker --bus` processes run at once; one decides, and when it is killed the other does
    (the serve process leaves every decision to the bus here)."""
    service.serve(STATEOWNER_RUN_BUS="false", STATEOWNER_DECIDE_AT_ONCE="false")
    first = service.worker("--bus")
    time.sleep(1.0)  # the first takes the lock; the second becomes its hot standby
    service.worker("--bus")
    ids, tokens = _prepare(service, items=30)
    stop = threading.Event()
    loops = _agents(service, tokens, stop)
    with service.client() as admin:
        deadline = time.monotonic() + 60
        while _done_count(admin) < len(ids) // 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.kill()
        _wait_until_done(admin, len(ids))
        stop.set()
        for loop in loops:
            loop.join(10)
        _check_every_item(admin, ids)


def _server_processes(parent: Process) -> list[int]:
    assert parent.process is not None
    pid = parent.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_serve_with_two_processes_shares_the_work_and_replaces_a_killed_one(
    service: LiveService,
) -> None:
    """`serve --processes 2` answers on one port from two processes; agents carry thirty items
    through while one of them is SIGKILLed, the parent starts another, and nothing is lost or
    doubled; SIGTERM stops them all."""
    parent = service.serve(STATEOWNER_PROCESSES="2")
    first = _server_processes(parent)
    assert len(first) == 2
    ids, tokens = _prepare(service, items=30)
    stop = threading.Event()
    loops = _agents(service, tokens, stop)
    with service.client() as admin:
        time.sleep(1)
        os.kill(first[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(set(_server_processes(parent)) - {first[1]}) < 2:
            assert time.monotonic() < deadline, "the parent did not replace the killed process"
            time.sleep(0.2)
        _wait_until_done(admin, len(ids))
        stop.set()
        for loop in loops:
            loop.join(10)
        _wait_until_caught_up(admin)
        _check_every_item(admin, ids)
    serving = _server_processes(parent)
    parent.stop()
    assert parent.process is not None
    assert parent.process.returncode == 0
    assert [pid for pid in serving if Path(f"/proc/{pid}").exists()] == []
