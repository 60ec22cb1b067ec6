from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import AgentOrOperator, AnyPrincipal, ByDep, ContainerDep, wait_for_view
from api.errors import not_found
from api.openapi import problems
from api.presenters import topic_body
from api.schemas import Name, TopicListOut, TopicOut, TopicPut

router = APIRouter(prefix="/v1/topics", tags=["topics"])


@router.put("/{name}", response_model=TopicOut, responses=problems(409, body=True))
def put_topic(
    name: Name, body: TopicPut, principal: AgentOrOperator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    """Describe a topic; the answer is the topics projection once it holds this write."""
    _, position = container.app.put_topic(name, body.facts(), by)
    wait_for_view(container, "topics", position)
    return {**topic_body(container.queries.topics(name)[0]), "position": position}


@router.get("", response_model=TopicListOut, responses=problems())
def list_topics(principal: AnyPrincipal, container: ContainerDep) -> dict[str, Any]:
    return {"topics": [topic_body(row) for row in container.queries.topics()]}


@router.get("/{name}", response_model=TopicOut, responses=problems(404))
def get_topic(name: Name, principal: AnyPrincipal, container: ContainerDep) -> dict[str, Any]:
    rows = container.queries.topics(name)
    if not rows:
        raise not_found(f"no topic named {name!r}")
    return topic_body(rows[0])
