"""Who did what: the audit projection, filtered and paged."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Auditor, ContainerDep
from api.openapi import problems
from api.schemas import AuditOut, Timestamp

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=AuditOut, responses=problems())
def audit(
    principal: Auditor,
    container: ContainerDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    type: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z]+$")] = None,
    item: uuid.UUID | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events by actor, type, item and time, oldest first; page with after=next_after."""
    rows = container.queries.audit(
        after=after, limit=limit, actor=actor, type=type, item=item, since=since, until=until
    )
    entries = [
        {
            "position": row["position"],
            "at": row["at"],
            "actor": row["actor"],
            "type": row["type"],
            "aggregate": row["aggregate"],
            "aggregate_id": str(row["aggregate_id"]),
            "version": row["version"],
            "item_id": str(row["item_id"]) if row["item_id"] else None,
            "caused_by": row["caused_by"],
        }
        for row in rows
    ]
    return {"entries": entries, "next_after": rows[-1]["position"] if len(rows) == limit else None}
