"""Schedules: the clock at the entry — a timetable that creates items, one per tick."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, StringConstraints, WithJsonSchema

from api.container import Container
from api.deps import AnyPrincipal, ByDep, ContainerDep, Operator, wait_for_view
from api.errors import not_found
from api.openapi import problems
from api.schemas import Body, JsonObject, Name, WholeNumber
from bus.timetable import Timetable
from domain.errors import DomainError
from domain.schedule import MAX_EVERY_SECONDS, ScheduleSpec

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

Cron = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Zone = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SchedulePut(Body):
    pipeline: Name
    topic: Name
    title: Annotated[str, StringConstraints(min_length=1, max_length=500)] = Field(
        description="the items' title; `{tick}` becomes the tick's time"
    )
    cron: Cron | None = Field(
        default=None, description="a cron expression (5 fields, or 6 with seconds first)"
    )
    every_seconds: (
        Annotated[
            int,
            WholeNumber,
            Field(ge=1, le=MAX_EVERY_SECONDS),
            WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_EVERY_SECONDS}),
        ]
        | None
    ) = Field(
        default=None, description="a fixed period instead of cron: ticks at multiples since 1970"
    )
    timezone: Zone = Field(default="UTC", description="an IANA time zone the cron reads in")
    input: JsonObject = Field(default_factory=dict)
    enabled: bool = True
    catch_up: Literal["skip", "once"] = Field(
        default="skip",
        description="after downtime: skip the missed ticks, or fire once for them",
    )

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            pipeline=self.pipeline,
            topic=self.topic,
            title=self.title,
            cron=self.cron,
            every_seconds=self.every_seconds,
            timezone=self.timezone,
            input=self.input,
            enabled=self.enabled,
            catch_up=self.catch_up,
        )


class ScheduleOut(BaseModel):
    name: str
    pipeline: str
    topic: str
    title: str
    cron: str | None
    every_seconds: int | None
    timezone: str
    input: JsonObject
    enabled: bool
    catch_up: str
    next_tick: datetime | None
    last_tick: datetime | None
    last_item_id: str | None
    fired: int
    skipped: int
    missed: int
    created_at: datetime
    updated_at: datetime
    position: int | None = None


class ScheduleListOut(BaseModel):
    schedules: list[ScheduleOut]


def _next_tick(row: dict[str, Any]) -> datetime | None:
    if not row["enabled"]:
        return None
    try:
        return Timetable.of(ScheduleSpec(**row["spec"])).next_after(row["after"])
    except DomainError:
        return None


def schedule_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        **row["spec"],
        "next_tick": _next_tick(row),
        "last_tick": row["last_tick"],
        "last_item_id": str(row["last_item_id"]) if row["last_item_id"] else None,
        "fired": row["fired"],
        "skipped": row["skipped"],
        "missed": row["missed"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _one(container: Container, name: str, position: int) -> dict[str, Any]:
    wait_for_view(container, "schedules", position)
    rows = container.queries.schedules(name)
    if not rows:
        raise not_found(f"no schedule named {name!r}")
    return {**schedule_body(rows[0]), "position": position}


@router.put("/{name}", response_model=ScheduleOut, responses=problems(404, 409, body=True))
def put_schedule(
    name: Name, body: SchedulePut, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    """Define or change a schedule: one item per tick of `cron` (or `every_seconds`), created by
    the scheduler exactly once. 422 names a bad cron or time zone; 404 an unknown pipeline."""
    spec = body.spec()
    Timetable.of(spec)
    _, position = container.app.put_schedule(name, spec, by)
    container.scheduler.wake()
    return _one(container, name, position)


@router.get("", response_model=ScheduleListOut, responses=problems())
def list_schedules(principal: AnyPrincipal, container: ContainerDep) -> dict[str, Any]:
    """Every schedule, with its next tick and what it has fired."""
    return {"schedules": [schedule_body(row) for row in container.queries.schedules()]}


@router.get("/{name}", response_model=ScheduleOut, responses=problems(404))
def get_schedule(name: Name, principal: AnyPrincipal, container: ContainerDep) -> dict[str, Any]:
    rows = container.queries.schedules(name)
    if not rows:
        raise not_found(f"no schedule named {name!r}")
    return schedule_body(rows[0])


@router.delete("/{name}", status_code=204, responses=problems(404))
def delete_schedule(
    name: Name, principal: Operator, container: ContainerDep, by: ByDep
) -> Response:
    """Stop the schedule; the items it created stay."""
    _, position = container.app.delete_schedule(name, by)
    wait_for_view(container, "schedules", position)
    return Response(status_code=204)
