"""FastAPI dependencies: the container, the caller, role checks, and each write's cause."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, credentials, principal_of
from api.container import Container
from api.errors import Problem, forbidden, not_found
from domain.agent import Role
from domain.application import StateOwner
from domain.values import By


async def get_any_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_container(
    container: Annotated[Container, Depends(get_any_container)],
) -> Container:
    """The container, for work that needs the database: 503 at once while it is known to be down."""
    if not container.health.ok:
        raise Problem(
            503,
            "unavailable",
            "Service unavailable",
            "the database cannot be reached; try again shortly",
            headers={"Retry-After": "1"},
        )
    return container


AnyContainerDep = Annotated[Container, Depends(get_any_container)]
ContainerDep = Annotated[Container, Depends(get_container)]


async def get_app(container: ContainerDep) -> StateOwner:
    return container.app


AppDep = Annotated[StateOwner, Depends(get_app)]


def request_context(request: Request) -> dict[str, Any]:
    context: dict[str, Any] = request.scope.get("state", {}).get("context", {})
    return context


async def request_id(request: Request) -> str:
    return str(request_context(request).get("request_id") or uuid.uuid4().hex)


RequestIdDep = Annotated[str, Depends(request_id)]


async def get_principal(
    request: Request,
    container: AnyContainerDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller: the built-in admin, or an agent — as this process remembers it, or read."""
    admin_token = container.settings.admin_token
    found = credentials(authorization, admin_token.get_secret_value() if admin_token else None)
    agent = None
    if found.agent_id is not None:
        agent = container.known_agents.get(found.agent_id)
        if agent is None:
            agent = await run_in_threadpool(container.read_agent, found.agent_id)
    principal = principal_of(found, agent)
    request_context(request)["principal"] = principal.actor
    return principal


AnyPrincipal = Annotated[Principal, Depends(get_principal)]


def require(*roles: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that admits a principal holding (or including) any of the roles."""

    # async: a check without I/O should not cost a trip through the thread pool.
    async def check(principal: AnyPrincipal) -> Principal:
        if not any(principal.has(role) for role in roles):
            raise forbidden(f"this needs the role {' or '.join(roles)}; you are {principal.role}")
        return principal

    check.__name__ = f"require_{'_or_'.join(roles)}"
    return check


Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
AgentPrincipal = Annotated[Principal, Depends(require(Role.AGENT))]
AgentOrOperator = Annotated[Principal, Depends(require(Role.AGENT, Role.OPERATOR))]


async def caused_by(principal: AnyPrincipal, request_id: RequestIdDep) -> By:
    """A write's cause: the calling principal, and this request."""
    return By(principal.actor, request_id)


ByDep = Annotated[By, Depends(caused_by)]


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found(f"no {what} {value!r}") from None


def wait_for_view(container: Container, view: str, position: int) -> None:
    """Read-your-writes: wait (bounded) until the view has applied the log up to `position`."""
    deadline = time.monotonic() + container.settings.read_wait_seconds
    delay = 0.001
    queries = container.queries
    if queries.view_position(view) >= position:
        return
    head = queries.log_head()
    if position > head:
        # Well formed, but the log has not come that far: a conflict with its state, not a
        # malformed request.
        raise Problem(
            409,
            "position_ahead",
            "Position ahead of the log",
            f"min_position {position} is beyond the newest event ({head})",
            position=head,
        )
    while True:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        reached = queries.view_position(view)
        if reached >= position:
            return
        if time.monotonic() >= deadline:
            raise Problem(
                503,
                "unavailable",
                "Projection behind",
                f"the {view} projection is at {reached}, not yet at {position}; try again",
                headers={"Retry-After": "1"},
                position=reached,
            )
