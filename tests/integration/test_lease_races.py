"""Races a lease holder runs into with itself: none may refuse it with a conflict its own lease
did not earn, and no refusal carries storage text."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.persistence import Tracking

from api.container import Container
from api.settings import Settings
from domain.application import StateOwner
from domain.errors import ConcurrentUpdate
from domain.values import By, Claimant, Completion, NewItem

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")
HOLDER = Claimant("writer", frozenset({"work"}))
AS_HOLDER = By("agent:writer", "t")
START = datetime(2026, 11, 26, 9, tzinfo=UTC)


class SteppedClock:
    """The application's clock, with a hook run the next time it is read: a seam for putting a
    rival's write between a command's read of its aggregate and its decision."""

    def __init__(self) -> None:
        self.now = START
        self.before_next_read: Callable[[], None] | None = None

    def __call__(self) -> datetime:
        hook, self.before_next_read = self.before_next_read, None
        if hook is not None:
            hook()
        return self.now


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def pair(settings: Settings, clock: SteppedClock) -> Iterator[tuple[StateOwner, StateOwner]]:
    """Two application instances on one database, as two API processes would be."""
    first = Container(settings, clock).start()
    second = Container(settings, lambda: START + timedelta(seconds=59)).start()
    try:
        yield first.app, second.app
    finally:
        second.close()
        first.close()


def test_a_completion_racing_a_heartbeat_near_expiry_is_not_refused(
    pair: tuple[StateOwner, StateOwner], clock: SteppedClock
) -> None:
    """The holder's completion reads the item, its heartbeat (in another process) renews the
    lease, and by the completion's clock the old expiry has passed: the completion reads again
    and succeeds, instead of answering lease_lost with the old expiry."""
    app, other = pair
    app.put_pipeline("p", {"stages": [{"name": "work", "lease_seconds": 60}]}, OPS)
    item, _ = app.create_item(NewItem("p", "t", "x", {}), OPS)
    _, lease, _ = app.claim(item.id, "work", HOLDER, AS_HOLDER)

    def heartbeat_lands_first() -> None:
        other.renew_lease(lease, HOLDER, AS_HOLDER)
        clock.now = START + timedelta(seconds=60.5)  # past the old expiry, before the new one

    clock.before_next_read = heartbeat_lands_first
    done, _ = app.complete_stage(lease, HOLDER, Completion({"ok": True}), AS_HOLDER)
    assert done.status == "done"
    assert [type(e).__name__ for e in app.events.get(item.id)][-3:] == [
        "LeaseRenewed",
        "StageCompleted",
        "ItemCompleted",
    ]


def test_a_conflict_says_nothing_of_the_storage(settings: Settings) -> None:
    """A decision whose tracking position was recorded already is refused with a plain
    sentence; the database's own text stays on the cause, for the log."""
    container = Container(settings.model_copy(update={"decide_at_once": False})).start()
    app = container.app
    app.put_pipeline("p", {"stages": [{"name": "work"}]}, OPS)
    item, _ = app.create_item(NewItem("p", "t", "x", {}), OPS)
    _, lease, _ = app.claim(item.id, "work", HOLDER, AS_HOLDER)
    app.complete_stage(lease, HOLDER, Completion(), AS_HOLDER)
    trigger = list(app.events.get(item.id))[-1]
    app.recorder.insert_tracking(Tracking(app.name, 7))
    with pytest.raises(ConcurrentUpdate) as conflict:
        app.decide([(trigger, By("system:bus", "event:4"))], Tracking(app.name, 7))
    assert str(conflict.value) == "another writer changed it first; try again"
    assert "recorded already" in str(conflict.value.__cause__)
    container.close()
