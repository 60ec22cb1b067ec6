"""The scheduler: the clock at the entry. It creates each due tick's item, exactly once."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from bus.exclusive import ExclusiveLoop
from bus.timetable import Timetable
from domain.application import StateOwner
from domain.errors import ConcurrentUpdate, DomainError, NotFound, StateConflict
from domain.schedule import Fire, Skip, on_due
from domain.values import By
from projections.queries import Queries

log = structlog.get_logger(__name__)

SCHEDULER_ACTOR = "system:scheduler"


class Scheduler(ExclusiveLoop):
    """One active scheduler across processes (an advisory lock, the bus's standby rule). The
    Schedule aggregate says which ticks are done; firing a tick appends its item and
    `ScheduleFired` together, so a crash leaves both or neither, and a rival that fired first
    makes the append conflict (the item id derives from the schedule and the tick)."""

    name = "scheduler"
    thread_name = "scheduler"

    def __init__(
        self,
        app: StateOwner,
        queries: Queries,
        conninfo: str,
        grace_seconds: float,
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__(conninfo, standby_retry_seconds=min(poll_seconds, 0.5))
        self.app = app
        self.queries = queries
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds
        self.fired = 0

    def tick(self) -> float:
        return self.tend_all()

    def tend_all(self) -> float:
        """Fire or skip what is due on every active schedule; return how long to sleep."""
        now = self.app.clock()
        wake_at = now + timedelta(seconds=self.poll_seconds)
        for name in self.queries.active_schedules():
            next_tick = self.tend(name, now)
            if next_tick is not None:
                wake_at = min(wake_at, next_tick)
        return max((wake_at - self.app.clock()).total_seconds(), 0.0)

    def tend(self, name: str, now: datetime) -> datetime | None:
        """Fire or skip the schedule's due ticks; return its next tick (None: inactive)."""
        try:
            schedule = self.app.schedule(name)
        except NotFound:
            return None
        if not schedule.active:
            return None
        spec = schedule.parsed
        try:
            timetable = Timetable.of(spec)
        except DomainError as error:  # a zone gone from the system's data, say: say so, go on
            log.error("schedule_unusable", schedule=name, error=str(error))
            return None
        latest, due = timetable.due(schedule.after, now)
        action = on_due(latest, due, now, self.grace_seconds, spec.catch_up)
        by = By(SCHEDULER_ACTOR, f"schedule:{name}@{latest.isoformat() if latest else ''}")
        try:
            if isinstance(action, Fire):
                self.app.fire_schedule(
                    name, action.tick, late=action.late, missed=action.missed, by=by
                )
                self.fired += 1
                log.info("schedule_fired", schedule=name, tick=action.tick.isoformat())
            elif isinstance(action, Skip):
                self.app.skip_schedule(name, action.tick, missed=action.missed, by=by)
                log.info("schedule_skipped", schedule=name, tick=action.tick.isoformat())
        except (ConcurrentUpdate, StateConflict, NotFound):
            pass  # a rival fired it first, or the schedule changed meanwhile: look next time
        return timetable.next_after(max(schedule.after, latest or schedule.after, now))
