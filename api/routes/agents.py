from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import Field

from api.auth import new_token
from api.deps import Admin, AppDep, Operator, RequestIdDep, RuntimeDep
from api.errors import Problem
from api.presenters import agent_row_body
from api.schemas import AgentCreate, Body, Name
from domain.agent import Agent, hash_token
from domain.errors import AlreadyExists
from domain.guards import window_of
from projections import queries

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
    }


@router.post("", status_code=201)
def create_agent(
    body: AgentCreate,
    principal: Admin,
    app: AppDep,
    caused_by: RequestIdDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Register an identity. Its token is in this answer and nowhere else, ever."""
    agent_id = Agent.create_id(body.name)
    token = new_token(agent_id)
    key_digest = hashlib.sha256((idempotency_key or "").encode()).hexdigest()
    body_digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    request_digest = f"{key_digest}:{body_digest}" if idempotency_key else ""
    try:
        agent, position = app.register_agent(
            name=body.name,
            role=body.role,
            stages=list(body.stages),
            token_hash=hash_token(token),
            request_digest=request_digest,
            actor=principal.actor,
            caused_by=caused_by,
        )
    except AlreadyExists:
        existing = app.agent(body.name)
        first_key, _, first_body = existing.request_digest.partition(":")
        if idempotency_key and first_key == key_digest:
            if first_body != body_digest:
                raise Problem(
                    409,
                    "idempotency_mismatch",
                    "Idempotency key reused",
                    "this Idempotency-Key came with another body",
                ) from None
            # The repeat gets the first answer, but a token is shown once only.
            return JSONResponse(jsonable_encoder(_agent_body(existing, None, 0)), status_code=201)
        raise
    return JSONResponse(jsonable_encoder(_agent_body(agent, token, position)), status_code=201)


@router.get("")
def list_agents(principal: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    """Identities with their activity and today's spend; never tokens."""
    window = window_of(runtime.app.clock())
    with runtime.pool.connection() as conn:
        rows = queries.agents(conn)
        spent = queries.spent_today(conn, window, [f"agent:{row['name']}" for row in rows])
    return {
        "agents": [
            {**agent_row_body(row), "spent_today_usd": float(spent.get(f"agent:{row['name']}", 0))}
            for row in rows
        ]
    }


class StagesPut(Body):
    stages: list[Name] = Field(max_length=100)


@router.post("/{name}/rotate")
def rotate_token(
    name: str, principal: Admin, app: AppDep, caused_by: RequestIdDep
) -> dict[str, Any]:
    """A new token for the agent, shown this once; the old one is refused from now on."""
    token = new_token(Agent.create_id(name))
    agent, position = app.rotate_token(
        name, token_hash=hash_token(token), actor=principal.actor, caused_by=caused_by
    )
    return _agent_body(agent, token, position)


@router.put("/{name}/stages")
def change_stages(
    name: str, body: StagesPut, principal: Admin, app: AppDep, caused_by: RequestIdDep
) -> dict[str, Any]:
    """Change the stages an agent may claim and work on."""
    agent, position = app.change_stages(
        name, stages=list(body.stages), actor=principal.actor, caused_by=caused_by
    )
    return _agent_body(agent, None, position)


@router.post("/{name}/disable")
def disable_agent(
    name: str, principal: Admin, app: AppDep, caused_by: RequestIdDep
) -> dict[str, Any]:
    agent, position = app.disable_agent(name, actor=principal.actor, caused_by=caused_by)
    return _agent_body(agent, None, position)
