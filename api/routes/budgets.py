"""Budgets and the cost circuit breaker."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from api.deps import AnyPrincipal, AppDep, Operator, RequestIdDep, RuntimeDep, wait_for_view
from api.errors import not_found
from api.schemas import Body
from domain.budget import parse_scope
from domain.guards import breaker_state, window_of
from projections import queries

router = APIRouter(prefix="/v1/budgets", tags=["budgets"])

Usd = Annotated[Decimal, Field(ge=0, le=10_000_000, max_digits=20, decimal_places=6)]


class BudgetPut(Body):
    alert_usd: Usd
    halt_usd: Usd


def budget_body(row: dict[str, Any], window: str) -> dict[str, Any]:
    return {
        "scope": row["scope"],
        "alert_usd": float(row["alert_usd"]),
        "halt_usd": float(row["halt_usd"]),
        "spent_usd": float(row["spent_usd"]),
        "window": window,
        "state": breaker_state(
            row["spent_usd"],
            row["alert_usd"],
            row["halt_usd"],
            reset_this_window=row["reset_this_window"],
        ),
        "reset_this_window": row["reset_this_window"],
        "alerts": row["alerts"],
        "halts": row["halts"],
    }


def _one(runtime: RuntimeDep, scope: str, position: int) -> dict[str, Any]:
    wait_for_view(runtime, "budgets", position)
    window = window_of(runtime.app.clock())
    with runtime.pool.connection() as conn:
        rows = queries.budgets_with_spend(conn, window, [scope])
    if not rows:
        raise not_found(f"no budget for {scope!r}")
    return {**budget_body(rows[0], window), "position": position}


@router.put("/{scope}")
def put_budget(
    scope: str,
    body: BudgetPut,
    principal: Operator,
    app: AppDep,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    """Set a scope's daily alert and halt levels (global, stage:NAME, agent:NAME, topic:NAME)."""
    parse_scope(scope)
    _, position = app.put_budget(
        scope,
        alert_usd=body.alert_usd,
        halt_usd=body.halt_usd,
        actor=principal.actor,
        caused_by=caused_by,
    )
    return _one(runtime, scope, position)


@router.get("")
def list_budgets(principal: AnyPrincipal, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Every budget with today's spend and its breaker's state: ok, alerting or halted."""
    window = window_of(runtime.app.clock())
    with runtime.pool.connection() as conn:
        return [budget_body(row, window) for row in queries.budgets_with_spend(conn, window)]


@router.post("/{scope}/reset")
def reset_breaker(
    scope: str, principal: Operator, app: AppDep, runtime: RuntimeDep, caused_by: RequestIdDep
) -> dict[str, Any]:
    """Close the scope's breaker for the rest of the current window."""
    _, position = app.reset_breaker(scope, actor=principal.actor, caused_by=caused_by)
    return _one(runtime, scope, position)
