"""The Schedule aggregate: the clock at the entry only — a named timetable that creates items.

When a tick falls due, the scheduler creates the tick's item (its id derives from the schedule
and the tick) and records `ScheduleFired` on the schedule in the same append: exactly once, even
across crashes and rival schedulers. Cron arithmetic is not here (it needs a library); the
scheduler computes ticks and this aggregate checks and records them."""

from __future__ import annotations

import uuid
import zoneinfo
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from domain.errors import InvalidField, StateConflict
from domain.recorded import Recorded, RecordedAggregate
from domain.values import By

SCHEDULE_NAMESPACE = uuid.UUID("0b6d3f52-8f0e-4c4e-9d87-3c1f7c5e2a10")
TICK_ITEM_NAMESPACE = uuid.UUID("5e0c9a44-7d2b-4f1a-b6e3-2a8d4c6f9b21")
CATCH_UP = ("skip", "once")
MAX_EVERY_SECONDS = 366 * 24 * 3600


@dataclass(frozen=True)
class ScheduleSpec:
    """What a schedule creates and when: a cron expression or a fixed period, in a time zone."""

    pipeline: str
    topic: str
    title: str
    cron: str | None = None
    every_seconds: int | None = None
    timezone: str = "UTC"
    input: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    catch_up: str = "skip"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def timing(self) -> tuple[str | None, int | None, str]:
        return self.cron, self.every_seconds, self.timezone


def check_spec(spec: ScheduleSpec) -> ScheduleSpec:
    """Refuse a spec that breaks a rule the domain can state, naming the field (a cron
    expression's grammar is checked by the scheduler's timetable)."""
    if (spec.cron is None) == (spec.every_seconds is None):
        raise InvalidField("cron", "give exactly one of cron and every_seconds")
    if spec.every_seconds is not None and not 1 <= spec.every_seconds <= MAX_EVERY_SECONDS:
        raise InvalidField(
            "every_seconds", f"must be 1 to {MAX_EVERY_SECONDS}, got {spec.every_seconds}"
        )
    if spec.catch_up not in CATCH_UP:
        raise InvalidField("catch_up", f"must be one of {', '.join(CATCH_UP)}")
    zone(spec.timezone)
    return spec


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone named, or InvalidField naming `timezone`."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise InvalidField("timezone", f"{name!r} is not a known IANA time zone") from None


def tick_item_id(schedule_id: uuid.UUID, tick: datetime) -> uuid.UUID:
    """The item a tick creates: the same id for the same schedule and tick, in any process."""
    return uuid.uuid5(TICK_ITEM_NAMESPACE, f"{schedule_id}/{tick.isoformat()}")


class Schedule(RecordedAggregate):
    """A named timetable. `after` is the instant from which ticks count: a tick at or before it
    has fired, been skipped, or came before the schedule (or its timing) existed."""

    if TYPE_CHECKING:
        name: str
        spec: dict[str, Any]
        after: datetime
        deleted: bool
        fired: int
        skipped: int

    class ScheduleDefined(Aggregate.Created, Recorded):
        name: str
        spec: dict[str, Any]
        after: datetime

        def apply(self, schedule: Schedule) -> None:
            schedule.name = self.name
            schedule.spec = self.spec
            schedule.after = self.after
            schedule.deleted = False
            schedule.fired = 0
            schedule.skipped = 0

    class ScheduleChanged(Recorded):
        spec: dict[str, Any]
        after: datetime

        def apply(self, schedule: Schedule) -> None:
            schedule.spec = self.spec
            schedule.after = self.after
            schedule.deleted = False

    class ScheduleDeleted(Recorded):
        def apply(self, schedule: Schedule) -> None:
            schedule.deleted = True

    class ScheduleFired(Recorded):
        """A tick's item was created (`late`: after the grace; `missed`: older ticks passed over)."""

        tick: datetime
        item_id: uuid.UUID
        late: bool
        missed: int

        def apply(self, schedule: Schedule) -> None:
            schedule.after = self.tick
            schedule.fired += 1

    class ScheduleSkipped(Recorded):
        """Ticks missed while no scheduler ran, passed over (catch_up: skip)."""

        tick: datetime
        missed: int

        def apply(self, schedule: Schedule) -> None:
            schedule.after = self.tick
            schedule.skipped += 1

    @staticmethod
    def create_id(name: str) -> uuid.UUID:
        return uuid.uuid5(SCHEDULE_NAMESPACE, name)

    @classmethod
    def define(cls, name: str, spec: ScheduleSpec, now: datetime, by: By) -> Schedule:
        return cls._begin(
            cls.ScheduleDefined, cls.create_id(name), by, name=name, spec=spec.to_dict(), after=now
        )

    @property
    def parsed(self) -> ScheduleSpec:
        return ScheduleSpec(**self.spec)

    @property
    def active(self) -> bool:
        return not self.deleted and bool(self.spec["enabled"])

    def change(self, spec: ScheduleSpec, now: datetime, by: By) -> None:
        """Put a new spec. Ticks that fell due while it was off, deleted or on another timing
        are not owed: counting starts again now."""
        old = self.parsed
        restarts = not self.active or old.timing != spec.timing
        if not restarts and old == spec:
            return
        self._record(
            Schedule.ScheduleChanged,
            by,
            spec=spec.to_dict(),
            after=max(self.after, now) if restarts else self.after,
        )

    def delete(self, by: By) -> None:
        if self.deleted:
            raise StateConflict(f"schedule {self.name!r} is deleted already")
        self._record(Schedule.ScheduleDeleted, by)

    def fire(self, tick: datetime, *, late: bool, missed: int, by: By) -> uuid.UUID:
        """Record the tick's item (created by the caller in the same append); returns its id."""
        self._check_due(tick)
        item_id = tick_item_id(self.id, tick)
        self._record(
            Schedule.ScheduleFired, by, tick=tick, item_id=item_id, late=late, missed=missed
        )
        return item_id

    def skip(self, tick: datetime, *, missed: int, by: By) -> None:
        self._check_due(tick)
        self._record(Schedule.ScheduleSkipped, by, tick=tick, missed=missed)

    def _check_due(self, tick: datetime) -> None:
        if not self.active:
            raise StateConflict(f"schedule {self.name!r} is not active")
        if tick <= self.after:
            raise StateConflict(f"tick {tick.isoformat()} of {self.name!r} is done already")


@dataclass(frozen=True)
class Fire:
    tick: datetime
    late: bool
    missed: int


@dataclass(frozen=True)
class Skip:
    tick: datetime
    missed: int


def on_due(
    latest: datetime | None, due: int, now: datetime, grace_seconds: float, catch_up: str
) -> Fire | Skip | None:
    """What to do about the `due` ticks (the latest at `latest`) after the schedule's `after`:
    fire the latest; older ones were missed. A latest tick past the grace was missed too:
    `once` fires it anyway (one item for the downtime), `skip` passes over it."""
    if latest is None or due < 1:
        return None
    late = (now - latest).total_seconds() > grace_seconds
    if late and catch_up == "skip":
        return Skip(latest, missed=due)
    return Fire(latest, late=late, missed=due - 1)
