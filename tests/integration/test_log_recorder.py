"""The log's single-round-trip writer keeps the library's guarantees: all or nothing, optimistic
concurrency, tracking that only moves forward, and gap-free positions under concurrent writers."""

from __future__ import annotations

import threading

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from api.runtime import Runtime
from domain.topic import Topic
from projections.log_recorder import SingleTripRecorder

pytestmark = pytest.mark.integration


def _topic(name: str) -> Topic:
    return Topic(name=name, owner=None, priority=0, tags=[], metadata={}, actor="t", caused_by="t")


def test_the_application_writes_through_the_single_trip_recorder(runtime: Runtime) -> None:
    """The composition root configures the log writer this module tests."""
    assert isinstance(runtime.app.recorder, SingleTripRecorder)


def test_a_tracking_position_recorded_already_refuses_the_whole_append(runtime: Runtime) -> None:
    """Appending with a tracking position at or below the recorded one appends no event."""
    app = runtime.app
    app.recorder.insert_tracking(Tracking("StateOwner", 5))
    head = app.position()
    with pytest.raises(IntegrityError):
        app.events.put(_topic("a").collect_events(), tracking=Tracking("StateOwner", 5))
    assert app.position() == head
    app.events.put(_topic("b").collect_events(), tracking=Tracking("StateOwner", 6))
    assert app.recorder.max_tracking_id("StateOwner") == 6


def test_a_version_conflict_refuses_the_events_and_the_tracking(runtime: Runtime) -> None:
    """A stale aggregate's append fails whole: its tracking position is not recorded either."""
    app = runtime.app
    topic = _topic("t")
    app.save(topic)
    stale = app.repository.get(topic.id)
    fresh = app.repository.get(topic.id)
    fresh.describe(owner="x", priority=1, tags=[], metadata={}, actor="t", caused_by="t")
    app.save(fresh)
    stale.describe(owner="y", priority=2, tags=[], metadata={}, actor="t", caused_by="t")
    with pytest.raises(IntegrityError):
        app.events.put(stale.collect_events(), tracking=Tracking("StateOwner", 99))
    assert app.recorder.max_tracking_id("StateOwner") in (None, 0)
    assert app.repository.get(topic.id).owner == "x"


def test_concurrent_writers_leave_no_gap_in_the_positions(runtime: Runtime) -> None:
    """Eight threads appending at once produce positions 1..N with no gap and no repeat."""
    app = runtime.app
    start = app.position()

    def write(worker: int) -> None:
        for n in range(40):
            app.save(_topic(f"w{worker}-{n}"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    notifications = app.recorder.select_notifications(
        start=start, limit=1000, inclusive_of_start=False
    )
    assert [n.id for n in notifications] == list(range(start + 1, start + 321))
