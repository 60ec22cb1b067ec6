"""schedules: each schedule, its timetable and what it fired; limits: the caps on concurrent
leases (a stage's `max_concurrent` in a pipeline's current spec, an agent's
`max_concurrent_leases`), read by claims."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from domain.pipeline import Pipeline
from domain.schedule import Schedule
from projections.base import Fold, FoldConflict, Row, View, handles


class SchedulesView(View):
    name = "schedules"
    tables = {"schedules": ("name",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, schedule_id uuid UNIQUE NOT NULL, "
                "spec jsonb NOT NULL, "
                "enabled boolean NOT NULL, deleted boolean NOT NULL, after timestamptz NOT NULL, "
                "last_tick timestamptz, last_item_id uuid, fired int NOT NULL, "
                "skipped int NOT NULL, missed int NOT NULL, created_at timestamptz NOT NULL, "
                "updated_at timestamptz NOT NULL)"
            ).format(self.table("schedules"))
        ]

    def _update(self, curs: Cursor[DictRow], event: Any, assignments: str, **params: Any) -> None:
        curs.execute(
            sql.SQL("UPDATE {} SET {}, updated_at = %(at)s WHERE schedule_id = %(id)s").format(
                self.table("schedules"), sql.SQL(assignments)
            ),
            {**params, "at": event.timestamp, "id": event.originator_id},
        )

    @handles(Schedule.ScheduleDefined)
    def defined(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (name, schedule_id, spec, enabled, deleted, after, fired, skipped, "
                "missed, created_at, updated_at) VALUES (%s, %s, %s, %s, false, %s, 0, 0, 0, %s, %s)"
            ).format(self.table("schedules")),
            (
                event.name,
                event.originator_id,
                Jsonb(event.spec),
                event.spec["enabled"],
                event.after,
                event.timestamp,
                event.timestamp,
            ),
        )

    @handles(Schedule.ScheduleChanged)
    def changed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(
            curs,
            event,
            "spec = %(spec)s, enabled = %(enabled)s, after = %(after)s, deleted = false",
            spec=Jsonb(event.spec),
            enabled=event.spec["enabled"],
            after=event.after,
        )

    @handles(Schedule.ScheduleDeleted)
    def deleted(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(curs, event, "deleted = true")

    @handles(Schedule.ScheduleFired)
    def fired(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(
            curs,
            event,
            "after = %(tick)s, last_tick = %(tick)s, last_item_id = %(item)s, "
            "fired = fired + 1, missed = missed + %(missed)s",
            tick=event.tick,
            item=event.item_id,
            missed=event.missed,
        )

    @handles(Schedule.ScheduleSkipped)
    def skipped(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(
            curs,
            event,
            "after = %(tick)s, skipped = skipped + 1, missed = missed + %(missed)s",
            tick=event.tick,
            missed=event.missed,
        )


class LimitsView(View):
    name = "limits"
    tables = {"stage_limits": ("pipeline", "stage"), "limit_pipelines": ("pipeline_id",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, stage text NOT NULL, "
                "max_concurrent int NOT NULL, PRIMARY KEY (pipeline, stage))"
            ).format(self.table("stage_limits")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (pipeline_id uuid PRIMARY KEY, name text NOT NULL)"
            ).format(self.table("limit_pipelines")),
        ]

    @handles(Pipeline.PipelineDefined)
    def defined(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL("INSERT INTO {} (pipeline_id, name) VALUES (%s, %s)").format(
                self.table("limit_pipelines")
            ),
            (event.originator_id, event.name),
        )
        self._caps(curs, event)

    @handles(Pipeline.PipelineRevised)
    def revised(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._caps(curs, event)

    def _caps(self, curs: Cursor[DictRow], event: Any) -> None:
        """The current version's caps apply to every item of the pipeline: a cap is an
        operator's lever, and raising it takes effect at once."""
        table = self.table("stage_limits")
        pipeline = sql.SQL("(SELECT name FROM {} WHERE pipeline_id = %s)").format(
            self.table("limit_pipelines")
        )
        curs.execute(
            sql.SQL("DELETE FROM {} WHERE pipeline = {}").format(table, pipeline),
            (event.originator_id,),
        )
        for stage in event.spec["stages"]:
            if stage.get("max_concurrent"):
                curs.execute(
                    sql.SQL(
                        "INSERT INTO {} (pipeline, stage, max_concurrent) SELECT {}, %s, %s"
                    ).format(table, pipeline),
                    (event.originator_id, stage["name"], stage["max_concurrent"]),
                )


class SchedulesFold(Fold):
    view = SchedulesView
    jsonb = frozenset({"spec"})

    def __init__(self) -> None:
        super().__init__()
        # schedule_id is UNIQUE, and the handlers find a row by it.
        self._names: dict[int, str] = {}

    def defined(self, event: Any, position: int) -> None:
        schedule_id = event.originator_id.int
        if schedule_id in self._names:
            raise FoldConflict(f"schedules: the schedule_id {event.originator_id} is taken")
        self.insert(
            "schedules",
            event.name,
            {
                "name": event.name,
                "schedule_id": event.originator_id,
                "spec": event.spec,
                "enabled": event.spec["enabled"],
                "deleted": False,
                "after": event.after,
                "last_tick": None,
                "last_item_id": None,
                "fired": 0,
                "skipped": 0,
                "missed": 0,
                "created_at": event.timestamp,
                "updated_at": event.timestamp,
            },
        )
        self._names[schedule_id] = event.name

    def _update(self, event: Any, **values: Any) -> Row | None:
        name = self._names.get(event.originator_id.int)
        return self.update("schedules", name, **values, updated_at=event.timestamp)

    def changed(self, event: Any, position: int) -> None:
        self._update(
            event, spec=event.spec, enabled=event.spec["enabled"], after=event.after, deleted=False
        )

    def deleted(self, event: Any, position: int) -> None:
        self._update(event, deleted=True)

    def fired(self, event: Any, position: int) -> None:
        row = self._update(
            event, after=event.tick, last_tick=event.tick, last_item_id=event.item_id
        )
        if row is not None:
            row["fired"] += 1
            row["missed"] += event.missed

    def skipped(self, event: Any, position: int) -> None:
        row = self._update(event, after=event.tick)
        if row is not None:
            row["skipped"] += 1
            row["missed"] += event.missed


class LimitsFold(Fold):
    view = LimitsView

    def defined(self, event: Any, position: int) -> None:
        self.insert(
            "limit_pipelines",
            event.originator_id.int,
            {"pipeline_id": event.originator_id, "name": event.name},
        )
        self._caps(event)

    def revised(self, event: Any, position: int) -> None:
        self._caps(event)

    def _caps(self, event: Any) -> None:
        found = self.tables["limit_pipelines"].get(event.originator_id.int)
        pipeline = found["name"] if found is not None else None
        limits = self.tables["stage_limits"]
        # DELETE ... WHERE pipeline = NULL deletes nothing; a row made with it is refused below.
        for key in [key for key in limits if key[0] == pipeline]:
            del limits[key]
        for stage in event.spec["stages"]:
            if stage.get("max_concurrent"):
                if pipeline is None:
                    raise FoldConflict(f"stage_limits: no pipeline {event.originator_id}")
                self.insert(
                    "stage_limits",
                    (pipeline, stage["name"]),
                    {
                        "pipeline": pipeline,
                        "stage": stage["name"],
                        "max_concurrent": stage["max_concurrent"],
                    },
                )
