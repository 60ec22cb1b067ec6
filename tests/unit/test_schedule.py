"""Schedules in memory: timetables (cron in a time zone, fixed periods), what catch-up decides
after downtime, and the one append that creates a tick's item and records it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from bus.scheduler import Scheduler
from bus.timetable import Timetable
from domain.application import StateOwner
from domain.errors import ConcurrentUpdate, InvalidField, NotFound, StateConflict
from domain.schedule import Fire, ScheduleSpec, Skip, on_due, tick_item_id
from domain.values import By

pytestmark = pytest.mark.unit

OPS = By("operator:ops", "req-1")
NOON = datetime(2026, 3, 28, 12, 0, 0, tzinfo=UTC)


def _spec(**changes: Any) -> ScheduleSpec:
    fields: dict[str, Any] = {"pipeline": "digest", "topic": "t", "title": "x", "every_seconds": 60}
    return ScheduleSpec(**{**fields, **changes})


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON + timedelta(microseconds=500))


@pytest.fixture
def app(clock: Clock) -> StateOwner:
    owner = StateOwner(clock=clock)
    owner.put_pipeline("digest", {"stages": [{"name": "read"}]}, OPS)
    return owner


def _scheduler(app: StateOwner, grace: float = 5) -> Scheduler:
    return Scheduler(app, cast(Any, None), "", grace_seconds=grace)


def test_every_seconds_ticks_are_multiples_since_the_epoch() -> None:
    """Period ticks fall on multiples of the period: the same in any process."""
    table = Timetable.of(_spec(every_seconds=3600))
    assert table.next_after(NOON + timedelta(minutes=1)) == NOON + timedelta(hours=1)
    assert table.due(NOON - timedelta(hours=3), NOON + timedelta(minutes=5)) == (NOON, 3)
    assert table.due(NOON, NOON + timedelta(minutes=5)) == (None, 0)


def test_cron_ticks_follow_the_time_zone_across_daylight_saving() -> None:
    """09:00 in Paris is 08:00 UTC before the spring change (29 March 2026) and 07:00 after."""
    table = Timetable.of(_spec(every_seconds=None, cron="0 9 * * *", timezone="Europe/Paris"))
    assert table.next_after(NOON) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    assert table.latest_at(NOON) == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    latest, due = table.due(NOON - timedelta(days=3), NOON)
    assert (latest, due) == (datetime(2026, 3, 28, 8, 0, tzinfo=UTC), 3)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"every_seconds": None, "cron": "* * *"}, "cron"),
        ({"every_seconds": None, "cron": "0 25 * * *"}, "cron"),
        ({"timezone": "Nowhere/Else"}, "timezone"),
    ],
)
def test_a_bad_timetable_names_its_field(changes: dict[str, Any], field: str) -> None:
    """A cron the library cannot read, or a zone there is none of, is refused naming it."""
    with pytest.raises(InvalidField) as refused:
        Timetable.of(_spec(**changes))
    assert refused.value.field == field


def test_catch_up_skips_or_fires_once_after_downtime() -> None:
    """On time: fire. Late: `skip` passes over the missed ticks, `once` fires one for them."""
    assert on_due(None, 0, NOON, 5, "skip") is None
    assert on_due(NOON, 1, NOON + timedelta(seconds=2), 5, "skip") == Fire(NOON, False, 0)
    late = NOON + timedelta(minutes=10)
    assert on_due(NOON, 10, late, 5, "skip") == Skip(NOON, 10)
    assert on_due(NOON, 10, late, 5, "once") == Fire(NOON, True, 9)


def test_a_tick_fires_its_item_and_its_record_in_one_append(app: StateOwner, clock: Clock) -> None:
    """The scheduler fires the due tick: the item (id from schedule and tick) and ScheduleFired
    go together; firing the same tick again is refused and appends nothing."""
    schedule, _ = app.put_schedule("digest", _spec(), OPS)
    clock.now = NOON + timedelta(seconds=61)
    scheduler = _scheduler(app)
    assert scheduler.tend("digest", clock.now) == NOON + timedelta(seconds=120)
    item = app.item(tick_item_id(schedule.id, NOON + timedelta(seconds=60)))
    assert (item.pipeline, item.stage, item.created_by) == ("digest", "read", "system:scheduler")
    assert app.schedule("digest").fired == 1
    position = app.position()
    with pytest.raises((StateConflict, ConcurrentUpdate)):
        app.fire_schedule("digest", NOON + timedelta(seconds=60), late=False, missed=0, by=OPS)
    assert app.position() == position
    scheduler.tend("digest", clock.now)
    assert app.position() == position


@pytest.mark.parametrize(("catch_up", "items"), [("skip", 0), ("once", 1)])
def test_after_downtime_catch_up_decides(
    app: StateOwner, clock: Clock, catch_up: str, items: int
) -> None:
    """Ten minutes without a scheduler: `skip` records the missed ticks passed over; `once`
    creates one (late) item for them."""
    schedule, _ = app.put_schedule("digest", _spec(catch_up=catch_up), OPS)
    clock.now = NOON + timedelta(minutes=10, seconds=30)
    _scheduler(app, grace=5).tend("digest", clock.now)
    after = app.schedule("digest")
    assert (after.fired, after.skipped) == (items, 1 - items)
    assert after.after == NOON + timedelta(minutes=10)
    fired = [e for e in app.events.get(schedule.id) if type(e).__name__ == "ScheduleFired"]
    assert [(e.late, e.missed) for e in fired] == ([(True, 9)] if items else [])


def test_a_schedule_needs_a_known_pipeline_and_one_timing(app: StateOwner) -> None:
    """An unknown pipeline is NotFound naming `pipeline`; both or neither timings are refused."""
    with pytest.raises(NotFound, match="pipeline"):
        app.put_schedule("x", _spec(pipeline="nope"), OPS)
    with pytest.raises(InvalidField, match="cron"):
        app.put_schedule("x", _spec(cron="* * * * *"), OPS)
    with pytest.raises(InvalidField, match="every_seconds"):
        app.put_schedule("x", _spec(every_seconds=0), OPS)


def test_a_schedule_turned_back_on_owes_nothing_for_the_time_off(
    app: StateOwner, clock: Clock
) -> None:
    """Disabled for an hour, then enabled: counting starts again from the change."""
    app.put_schedule("digest", _spec(), OPS)
    app.put_schedule("digest", _spec(enabled=False), OPS)
    clock.now = NOON + timedelta(hours=1, seconds=1)
    assert _scheduler(app).tend("digest", clock.now) is None
    app.put_schedule("digest", _spec(), OPS)
    assert app.schedule("digest").after == clock.now
    _scheduler(app).tend("digest", clock.now + timedelta(seconds=2))
    assert app.schedule("digest").fired == 0
