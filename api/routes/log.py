"""The global log and the followers' progress through it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Auditor, Operator, RuntimeDep
from api.presenters import event_body
from api.schemas import EventListOut
from projections import queries
from projections.follower import read_batch

router = APIRouter(tags=["log"])


@router.get("/v1/events", response_model=EventListOut)
def events(
    principal: Auditor,
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The global log in order; page with after=last_position."""
    batch = read_batch(runtime.app.recorder, runtime.app.mapper, after, limit)
    return {
        "events": [event_body(event, position) for event, position in batch],
        "last_position": batch[-1][1] if batch else after,
    }


def projection_statuses(runtime: RuntimeDep) -> list[dict[str, Any]]:
    with runtime.pool.connection() as conn:
        positions = {name: queries.view_position(conn, name) for name in runtime.views}
        positions["bus"] = queries.bus_position(conn)
        # The head is read last, so a follower is never reported caught up with a head it has not seen.
        head = queries.log_head(conn)
    statuses = []
    for name, position in positions.items():
        follower = runtime.follower(name)
        statuses.append(
            {
                "name": name,
                "position": position,
                "head": head,
                "lag": max(head - position, 0),
                "running": follower.state.running if follower else None,
                "standby": follower.state.standby if follower else None,
                "error": follower.state.error if follower else None,
            }
        )
    return statuses


@router.get("/v1/projections")
def projections(principal: Operator, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Each follower's position, the log head and the lag between them."""
    return projection_statuses(runtime)
