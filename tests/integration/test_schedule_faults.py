"""Schedules under crashes and rivals: a `stateowner serve` SIGKILLed at tick instants and
started again, two schedulers at once, two schedulers racing without the lock — and every
tick still has exactly one item."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.container import Container
from bus.scheduler import Scheduler
from domain.schedule import ScheduleSpec, tick_item_id
from domain.values import By
from tests.live import STATEOWNER, LiveService

pytestmark = pytest.mark.integration

SCHEDULE = {
    "pipeline": "digest",
    "topic": "ticks",
    "title": "tick {tick}",
    "every_seconds": 1,
    "catch_up": "once",
}


@pytest.fixture
def service(clean_database: str, tmp_path: Path) -> Iterator[LiveService]:
    live = LiveService(clean_database, tmp_path, {"STATEOWNER_SCHEDULE_GRACE_SECONDS": "300"})
    try:
        yield live
    finally:
        live.stop_all()


def _all_events(admin: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = admin.get("/v1/events", params={"after": after, "limit": 1000}).json()
        events += page["events"]
        if not page["events"]:
            return events
        after = page["events"][-1]["position"]


def _check_one_item_per_tick(events: list[dict[str, Any]]) -> int:
    """Every ScheduleFired names a tick once and an item created once, by the scheduler, in the
    same append; and the scheduler created no item it did not record. Returns the ticks."""
    fired = [e for e in events if e["type"] == "ScheduleFired"]
    ticks = Counter(e["data"]["tick"] for e in fired)
    assert [t for t, n in ticks.items() if n > 1] == []
    created = [
        e["aggregate_id"]
        for e in events
        if e["type"] == "ItemCreated" and e["actor"] == "system:scheduler"
    ]
    assert sorted(created) == sorted(e["data"]["item_id"] for e in fired)
    for event in fired:  # the item and the record of its tick went in one append
        created_with = [
            e
            for e in events
            if e["type"] == "ItemCreated" and e["aggregate_id"] == event["data"]["item_id"]
        ]
        assert abs(created_with[0]["position"] - event["position"]) <= 2
    return len(fired)


def _prepare(service: LiveService) -> None:
    with service.client() as admin:
        spec = {"stages": [{"name": "read"}]}
        assert admin.put("/v1/pipelines/digest", json=spec).status_code == 200
        assert admin.put("/v1/schedules/every-second", json=SCHEDULE).status_code == 200


def _at_next_tick(offset: float) -> None:
    """Sleep until `offset` seconds past the next whole second: when the scheduler fires."""
    time.sleep(1 - time.time() % 1 + offset)


@pytest.mark.timeout(600)
def test_a_scheduler_killed_mid_tick_and_restarted_creates_no_duplicate(
    service: LiveService,
) -> None:
    """SIGKILL the only server as a tick fires, again and again; restarted, it catches up once
    and no tick has two items."""
    server = service.serve()
    _prepare(service)
    for offset in (0.002, 0.01, 0.004):
        _at_next_tick(offset)
        server.kill()
        time.sleep(0.3)
        server = service.serve()
    time.sleep(2)
    with service.client() as admin:
        service.wait_ready()
        events = _all_events(admin)
    fired = _check_one_item_per_tick(events)
    assert fired >= 3
    late = [e for e in events if e["type"] == "ScheduleFired" and e["data"]["late"]]
    assert late == []  # restarted within the grace: each catch-up tick was on time
    verify = subprocess.run(
        [str(STATEOWNER), "projections", "verify"],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.timeout(300)
def test_two_schedulers_at_once_create_each_ticks_item_once(service: LiveService) -> None:
    """Two `worker --bus` processes (each with a scheduler) run at once; one schedules, and
    when it is killed the standby takes over; each tick has one item."""
    service.serve(STATEOWNER_RUN_BUS="false")
    first = service.worker("--bus")
    second = service.worker("--bus")
    _prepare(service)
    with service.client() as admin:
        _wait_for_ticks(admin, 2)
        _at_next_tick(0.003)
        first.kill()
        before = len(_fired(_all_events(admin)))
        _wait_for_ticks(admin, before + 3)
        events = _all_events(admin)
    second.stop()
    _check_one_item_per_tick(events)


def _fired(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "ScheduleFired"]


def _wait_for_ticks(admin: httpx.Client, count: int, timeout: float = 90) -> None:
    """Wait until the schedule has fired `count` ticks (a worker takes a while to start here)."""
    deadline = time.monotonic() + timeout
    while len(_fired(_all_events(admin))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} ticks fired"
        time.sleep(0.5)


def test_two_schedulers_racing_without_the_lock_fire_each_tick_once(
    container: Container,
) -> None:
    """Two schedulers with no lock between them tend the same schedule at the same instants:
    the item id and the schedule's version let one of them fire each tick, the other not."""
    by = By("operator:test", "test")
    container.app.put_pipeline("digest", {"stages": [{"name": "read"}]}, by)
    schedule, _ = container.app.put_schedule(
        "race", ScheduleSpec("digest", "ticks", "tick", every_seconds=1), by
    )
    rivals = [
        Scheduler(container.app, container.queries, container.database.conninfo, 3600)
        for _ in range(2)
    ]
    start = schedule.after
    for second in range(1, 16):
        now = start + timedelta(seconds=second)
        barrier = threading.Barrier(2)

        def tend(scheduler: Scheduler, at: Any = now, wait: Any = barrier) -> None:
            wait.wait()
            scheduler.tend("race", at)

        threads = [threading.Thread(target=tend, args=(rival,)) for rival in rivals]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert sum(rival.fired for rival in rivals) == 15
    recorded = container.app.schedule("race")
    assert recorded.fired == 15
    ticks = [e.tick for e in container.app.events.get(recorded.id) if hasattr(e, "tick")]
    assert len(set(ticks)) == 15
    for tick in ticks:
        assert container.app.item(tick_item_id(recorded.id, tick)).topic == "ticks"
