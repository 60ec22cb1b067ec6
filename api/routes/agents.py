from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import Field

from api.auth import new_token
from api.deps import Admin, AppDep, ByDep, ContainerDep, Operator
from api.errors import idempotency_mismatch
from api.openapi import problems
from api.presenters import agent_row_body
from api.schemas import (
    AgentCreate,
    AgentListOut,
    AgentOut,
    Body,
    IdempotencyKey,
    LeaseCap,
    Name,
)
from domain.agent import Agent, hash_token
from domain.application import StateOwner
from domain.errors import AlreadyExists
from domain.guards import window_of
from domain.values import By, Registration

router = APIRouter(prefix="/v1/agents", tags=["agents"])


def _agent_body(agent: Agent, token: str | None, position: int) -> dict[str, Any]:
    return {
        "id": str(agent.id),
        "name": agent.name,
        "role": agent.role,
        "stages": agent.stages,
        "disabled": agent.disabled,
        "token": token,
        "position": position,
        "max_concurrent_leases": agent.max_concurrent_leases,
    }


@router.post(
    "",
    status_code=201,
    response_model=AgentOut,
    responses=problems(409, body=True),
)
def create_agent(
    body: AgentCreate,
    principal: Admin,
    app: AppDep,
    by: ByDep,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> JSONResponse:
    """Register an identity. Its token is in this answer and nowhere else, ever."""
    token = new_token(Agent.create_id(body.name))
    key_digest = hashlib.sha256((idempotency_key or "").encode()).hexdigest()
    # exclude_none: a request without the newer optional fields digests as it always did.
    body_digest = hashlib.sha256(body.model_dump_json(exclude_none=True).encode()).hexdigest()
    registration = Registration(
        body.name,
        body.role,
        tuple(body.stages),
        hash_token(token),
        f"{key_digest}:{body_digest}" if idempotency_key else "",
        body.max_concurrent_leases,
    )
    try:
        agent, position = app.register_agent(registration, by)
    except AlreadyExists:
        existing = app.agent(body.name)
        first_key, _, first_body = existing.request_digest.partition(":")
        if idempotency_key and first_key == key_digest:
            if first_body != body_digest:
                raise idempotency_mismatch() from None
            # The repeat gets the first answer, but a token is shown once only.
            return JSONResponse(jsonable_encoder(_agent_body(existing, None, 0)), status_code=201)
        raise
    return JSONResponse(jsonable_encoder(_agent_body(agent, token, position)), status_code=201)


@router.get("", response_model=AgentListOut, responses=problems())
def list_agents(principal: Operator, container: ContainerDep) -> dict[str, Any]:
    """Identities with their activity and today's spend; never tokens."""
    rows = container.queries.agents()
    spent = container.queries.spent(
        window_of(container.app.clock()), [f"agent:{row['name']}" for row in rows]
    )
    return {
        "agents": [
            {**agent_row_body(row), "spent_today_usd": float(spent.get(f"agent:{row['name']}", 0))}
            for row in rows
        ]
    }


class StagesPut(Body):
    stages: list[Name] = Field(max_length=100)


def rotate_token_for(app: StateOwner, name: str, by: By) -> tuple[Agent, str, int]:
    """Give the agent a new token (returned, to be shown once); the old one is refused."""
    token = new_token(Agent.create_id(name))
    agent, position = app.rotate_token(name, hash_token(token), by)
    return agent, token, position


@router.post("/{name}/rotate", response_model=AgentOut, responses=problems(404, 409))
def rotate_token(name: Name, principal: Admin, app: AppDep, by: ByDep) -> dict[str, Any]:
    """A new token for the agent, shown this once; the old one is refused from now on."""
    agent, token, position = rotate_token_for(app, name, by)
    return _agent_body(agent, token, position)


@router.put("/{name}/stages", response_model=AgentOut, responses=problems(404, 409, body=True))
def change_stages(
    name: Name, body: StagesPut, principal: Admin, app: AppDep, by: ByDep
) -> dict[str, Any]:
    """Change the stages an agent may claim and work on."""
    agent, position = app.change_stages(name, list(body.stages), by)
    return _agent_body(agent, None, position)


class LimitsPut(Body):
    max_concurrent_leases: LeaseCap | None


@router.put("/{name}/limits", response_model=AgentOut, responses=problems(404, body=True))
def set_limits(
    name: Name, body: LimitsPut, principal: Operator, app: AppDep, by: ByDep
) -> dict[str, Any]:
    """How many leases the agent may hold at once (null: no cap of its own); claims beyond it
    wait, then get 204."""
    agent, position = app.set_agent_limits(name, body.max_concurrent_leases, by)
    return _agent_body(agent, None, position)


@router.post("/{name}/disable", response_model=AgentOut, responses=problems(404, 409))
def disable_agent(name: Name, principal: Admin, app: AppDep, by: ByDep) -> dict[str, Any]:
    agent, position = app.disable_agent(name, by)
    return _agent_body(agent, None, position)
