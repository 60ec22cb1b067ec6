"""Budgets and the cost circuit breaker."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from api.container import Container
from api.deps import AnyPrincipal, ByDep, ContainerDep, Operator, wait_for_view
from api.errors import not_found
from api.openapi import problems
from api.schemas import Body, BudgetOut, ScopeName, amount, amount_schema
from domain.budget import parse_scope
from domain.guards import window_of
from domain.values import Limits
from projections.queries import BudgetStatus

router = APIRouter(prefix="/v1/budgets", tags=["budgets"])

Usd = Annotated[Decimal, amount(10_000_000), Field(ge=0, le=10_000_000), amount_schema(10_000_000)]


class BudgetPut(Body):
    alert_usd: Usd
    halt_usd: Usd

    def limits(self) -> Limits:
        return Limits(self.alert_usd, self.halt_usd)


def budget_body(budget: BudgetStatus) -> dict[str, Any]:
    return {
        "scope": budget.scope,
        "alert_usd": float(budget.alert_usd),
        "halt_usd": float(budget.halt_usd),
        "spent_usd": float(budget.spent_usd),
        "window": budget.window,
        "state": budget.state,
        "reset_this_window": budget.reset_this_window,
        "alerts": budget.alerts,
        "halts": budget.halts,
    }


def _one(container: Container, scope: str, position: int) -> dict[str, Any]:
    wait_for_view(container, "budgets", position)
    budgets = container.queries.budgets(window_of(container.app.clock()), [scope])
    if not budgets:
        raise not_found(f"no budget for {scope!r}")
    return {**budget_body(budgets[0]), "position": position}


@router.put("/{scope}", response_model=BudgetOut, responses=problems(409, body=True))
def put_budget(
    scope: ScopeName, body: BudgetPut, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    """Set a scope's daily alert and halt levels (global, stage:NAME, agent:NAME, topic:NAME)."""
    parse_scope(scope)
    _, position = container.app.put_budget(scope, body.limits(), by)
    return _one(container, scope, position)


@router.get("", response_model=list[BudgetOut], responses=problems())
def list_budgets(principal: AnyPrincipal, container: ContainerDep) -> list[dict[str, Any]]:
    """Every budget with today's spend and its breaker's state: ok, alerting or halted."""
    budgets = container.queries.budgets(window_of(container.app.clock()))
    return [budget_body(budget) for budget in budgets]


@router.post("/{scope}/reset", response_model=BudgetOut, responses=problems(404, 409))
def reset_breaker(
    scope: ScopeName, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    """Close the scope's breaker for the rest of the current window."""
    _, position = container.app.reset_breaker(scope, by)
    return _one(container, scope, position)
