"""The global log and the followers' progress through it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.container import Container
from api.deps import Auditor, ContainerDep, Operator
from api.openapi import problems
from api.presenters import event_body
from api.schemas import EventListOut, ProjectionOut
from projections.follower import read_batch
from projections.poison import OPEN, DeadLetter
from projections.queries import Queries

router = APIRouter(tags=["log"])


@router.get("/v1/events", response_model=EventListOut, responses=problems())
def events(
    principal: Auditor,
    container: ContainerDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The global log in order; page with after=last_position."""
    batch = read_batch(container.app.recorder, container.app.mapper, after, limit)
    return {
        "events": [event_body(event, position) for event, position in batch],
        "last_position": batch[-1][1] if batch else after,
    }


def projection_statuses(
    container: Container, queries: Queries | None = None
) -> list[dict[str, Any]]:
    positions, head = (queries or container.queries).positions(list(container.views))
    letters: dict[str, list[DeadLetter]] = {}
    for letter in container.dead_letters.all():
        letters.setdefault(letter.view, []).append(letter)
    statuses = []
    for name, position in positions.items():
        follower = container.follower(name)
        stopped = next((d for d in letters.get(name, []) if d.status == OPEN), None)
        statuses.append(
            {
                "name": name,
                "position": position,
                "head": head,
                "lag": max(head - position, 0),
                "running": (follower.state.running and stopped is None) if follower else None,
                "standby": follower.state.standby if follower else None,
                "error": stopped.error if stopped else follower.state.error if follower else None,
                "dead_letters": [letter.body() for letter in letters.get(name, [])],
            }
        )
    return statuses


@router.get("/v1/projections", response_model=list[ProjectionOut], responses=problems())
def projections(principal: Operator, container: ContainerDep) -> list[dict[str, Any]]:
    """Each follower's position, the log head and the lag between them."""
    return projection_statuses(container)
