"""The log's single-round-trip writer keeps the library's guarantees: all or nothing, optimistic
concurrency, tracking that only moves forward, and gap-free positions under concurrent writers."""

from __future__ import annotations

import threading

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from api.container import Container
from domain.topic import Topic
from domain.values import By, TopicFacts
from store.log_recorder import SingleTripRecorder

pytestmark = pytest.mark.integration


BY = By("operator:test", "t")


def _topic(name: str) -> Topic:
    return Topic.define(name, TopicFacts(), BY)


def test_the_application_writes_through_the_single_trip_recorder(container: Container) -> None:
    """The composition root configures the log writer this module tests."""
    assert isinstance(container.app.recorder, SingleTripRecorder)


def test_a_tracking_position_recorded_already_refuses_the_whole_append(
    container: Container,
) -> None:
    """Appending with a tracking position at or below the recorded one appends no event."""
    app = container.app
    app.recorder.insert_tracking(Tracking("StateOwner", 5))
    head = app.position()
    with pytest.raises(IntegrityError):
        app.events.put(_topic("a").collect_events(), tracking=Tracking("StateOwner", 5))
    assert app.position() == head
    app.events.put(_topic("b").collect_events(), tracking=Tracking("StateOwner", 6))
    assert app.recorder.max_tracking_id("StateOwner") == 6


def test_a_version_conflict_refuses_the_events_and_the_tracking(container: Container) -> None:
    """A stale aggregate's append fails whole: its tracking position is not recorded either."""
    app = container.app
    topic = _topic("t")
    app.save(topic)
    stale = app.repository.get(topic.id)
    fresh = app.repository.get(topic.id)
    fresh.describe(TopicFacts(owner="x", priority=1), BY)
    app.save(fresh)
    stale.describe(TopicFacts(owner="y", priority=2), BY)
    with pytest.raises(IntegrityError):
        app.events.put(stale.collect_events(), tracking=Tracking("StateOwner", 99))
    assert app.recorder.max_tracking_id("StateOwner") in (None, 0)
    assert app.repository.get(topic.id).owner == "x"


def test_concurrent_writers_leave_no_gap_in_the_positions(container: Container) -> None:
    """Eight threads appending at once produce positions 1..N with no gap and no repeat."""
    app = container.app
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
