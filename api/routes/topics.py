from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import AgentOrOperator, AnyPrincipal, AppDep, RequestIdDep, RuntimeDep, wait_for_view
from api.errors import not_found
from api.presenters import topic_body
from api.schemas import Name, TopicPut
from projections import queries

router = APIRouter(prefix="/v1/topics", tags=["topics"])


@router.put("/{name}")
def put_topic(
    name: Name,
    body: TopicPut,
    principal: AgentOrOperator,
    app: AppDep,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    """Describe a topic; the answer is the topics projection once it holds this write."""
    _, position = app.put_topic(
        name,
        owner=body.owner,
        priority=body.priority,
        tags=list(body.tags),
        metadata=body.metadata,
        actor=principal.actor,
        caused_by=caused_by,
    )
    wait_for_view(runtime, "topics", position)
    with runtime.pool.connection() as conn:
        rows = queries.topics(conn, name)
    return {**topic_body(rows[0]), "position": position}


@router.get("")
def list_topics(principal: AnyPrincipal, runtime: RuntimeDep) -> dict[str, Any]:
    with runtime.pool.connection() as conn:
        return {"topics": [topic_body(row) for row in queries.topics(conn)]}


@router.get("/{name}")
def get_topic(name: str, principal: AnyPrincipal, runtime: RuntimeDep) -> dict[str, Any]:
    with runtime.pool.connection() as conn:
        rows = queries.topics(conn, name)
    if not rows:
        raise not_found(f"no topic named {name!r}")
    return topic_body(rows[0])
