"""FastAPI dependencies: the runtime, the caller, and role checks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from api.auth import Principal, authenticate
from api.errors import Problem, forbidden, not_found, validation
from api.runtime import Runtime
from domain.agent import Role
from domain.application import StateOwner
from projections import queries


async def get_any_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(runtime: Annotated[Runtime, Depends(get_any_runtime)]) -> Runtime:
    """The runtime, for work that needs the database: 503 at once while it is known to be down."""
    if not runtime.health.ok:
        raise Problem(
            503,
            "unavailable",
            "Service unavailable",
            "the database cannot be reached; try again shortly",
            headers={"Retry-After": "1"},
        )
    return runtime


AnyRuntimeDep = Annotated[Runtime, Depends(get_any_runtime)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_app(runtime: RuntimeDep) -> StateOwner:
    return runtime.app


AppDep = Annotated[StateOwner, Depends(get_app)]


def request_context(request: Request) -> dict[str, Any]:
    context: dict[str, Any] = request.scope.get("state", {}).get("context", {})
    return context


async def request_id(request: Request) -> str:
    return str(request_context(request).get("request_id") or uuid.uuid4().hex)


RequestIdDep = Annotated[str, Depends(request_id)]


def get_principal(
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    admin_token = runtime.settings.admin_token
    principal = authenticate(
        authorization, runtime.app, admin_token.get_secret_value() if admin_token else None
    )
    request_context(request)["principal"] = principal.actor
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that admits a principal holding (or including) any of the roles."""

    # async: a check without I/O should not cost a trip through the thread pool.
    async def check(principal: PrincipalDep) -> Principal:
        if not any(principal.has(role) for role in roles):
            raise forbidden(f"this needs the role {' or '.join(roles)}; you are {principal.role}")
        return principal

    check.__name__ = f"require_{'_or_'.join(roles)}"
    return check


AnyPrincipal = PrincipalDep
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
AgentPrincipal = Annotated[Principal, Depends(require(Role.AGENT))]
AgentOrOperator = Annotated[Principal, Depends(require(Role.AGENT, Role.OPERATOR))]


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found(f"no {what} {value!r}") from None


def wait_for_view(runtime: Runtime, view: str, position: int) -> None:
    """Read-your-writes: wait (bounded) until the view has applied the log up to `position`."""
    deadline = time.monotonic() + runtime.settings.read_wait_seconds
    delay = 0.001
    with runtime.pool.connection() as conn:
        if queries.view_position(conn, view) >= position:
            return
        head = queries.log_head(conn)
    if position > head:
        raise validation(f"min_position {position} is beyond the newest event ({head})")
    while True:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        with runtime.pool.connection() as conn:
            reached = queries.view_position(conn, view)
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
