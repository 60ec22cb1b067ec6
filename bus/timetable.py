"""When a schedule's ticks fall: cron expressions (by cronsim) or fixed periods, in a time zone.

A tick is an instant in UTC, whole seconds. Cron ticks follow the schedule's time zone (its
daylight-saving changes included, as cronsim handles them); `every_seconds` ticks are the
multiples of the period since the Unix epoch, so every process computes the same ticks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from domain.errors import InvalidField
from domain.schedule import ScheduleSpec, zone

SECOND = timedelta(seconds=1)
# Counting ticks missed over a long downtime stops here; the count says "at least".
MAX_COUNTED = 10_000


def _whole(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Timetable:
    cron: str | None
    every_seconds: int | None
    tz: ZoneInfo

    @classmethod
    def of(cls, spec: ScheduleSpec) -> Timetable:
        """The spec's timetable, or InvalidField naming `cron` or `timezone`."""
        tz = zone(spec.timezone)
        if spec.cron is not None:
            try:
                next(CronSim(spec.cron, datetime.now(tz)))
            except (CronSimError, StopIteration, ValueError, OverflowError) as error:
                raise InvalidField(
                    "cron", f"{spec.cron!r} is not a cron expression: {error}"
                ) from None
            except Exception:  # a text the library trips over is no cron expression either
                raise InvalidField("cron", f"{spec.cron!r} is not a cron expression") from None
        return cls(spec.cron, spec.every_seconds, tz)

    def next_after(self, at: datetime) -> datetime:
        """The first tick after `at`."""
        if self.every_seconds is not None:
            k = int(_whole(at).timestamp()) // self.every_seconds + 1
            return datetime.fromtimestamp(k * self.every_seconds, UTC)
        assert self.cron is not None
        return _whole(next(CronSim(self.cron, _whole(at).astimezone(self.tz))))

    def latest_at(self, now: datetime) -> datetime:
        """The last tick at or before `now`."""
        if self.every_seconds is not None:
            k = int(_whole(now).timestamp()) // self.every_seconds
            return datetime.fromtimestamp(k * self.every_seconds, UTC)
        assert self.cron is not None
        start = (_whole(now) + SECOND).astimezone(self.tz)
        return _whole(next(CronSim(self.cron, start, reverse=True)))

    def due(self, after: datetime, now: datetime) -> tuple[datetime | None, int]:
        """The latest tick in (after, now] and how many ticks fall there (up to MAX_COUNTED)."""
        if now <= after:
            return None, 0
        latest = self.latest_at(now)
        if latest <= after:
            return None, 0
        if self.every_seconds is not None:
            first = int(_whole(after).timestamp()) // self.every_seconds + 1
            return latest, min(
                int(latest.timestamp()) // self.every_seconds - first + 1, MAX_COUNTED
            )
        assert self.cron is not None
        count = 0
        for tick in CronSim(self.cron, _whole(after).astimezone(self.tz)):
            if _whole(tick) > latest or count >= MAX_COUNTED:
                break
            count += 1
        return latest, max(count, 1)
