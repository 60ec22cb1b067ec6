"""The governor records a budget's crossings once per window, and warns of each in the log."""

from __future__ import annotations

from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from api.container import Container
from bus.governor import Governor
from domain.budget import Budget
from domain.values import By, Claimant, Completion, Limits, NewItem, Report
from projections.base import ViewGroup
from projections.follower import read_batch

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")
BOT = By("agent:bot", "t")
WORKER = Claimant("bot", frozenset({"work"}))


def _spend(container: Container, cost: str) -> None:
    """One completion costing `cost`, counted by the views."""
    app = container.app
    item, _ = app.create_item(NewItem("p", "t", "x", {}), OPS)
    _, lease, _ = app.claim(item.id, "work", WORKER, BOT)
    app.complete_stage(lease, WORKER, Completion(report=Report(Decimal(cost))), BOT)
    views = ViewGroup(list(container.views.values()))
    after = views.position()
    views.process_batch(read_batch(app.recorder, app.mapper, after, 1000), after)


def test_crossings_are_recorded_once_and_logged_as_warnings(container: Container) -> None:
    """Spend over the alert level records BudgetAlerted and warns; over the halt level,
    BreakerOpened and a warning; checking again records and logs nothing."""
    app = container.app
    app.put_pipeline("p", {"stages": [{"name": "work"}]}, OPS)
    app.put_budget("agent:bot", Limits(Decimal(1), Decimal(2)), OPS)
    governor = Governor(app, container.queries)
    _spend(container, "1.5")
    with capture_logs() as alerted:
        governor.check()
    assert [(e["event"], e["log_level"], e["scope"]) for e in alerted] == [
        ("budget_alert", "warning", "agent:bot")
    ]
    assert alerted[0]["spent_usd"] == 1.5
    _spend(container, "1")
    with capture_logs() as opened:
        governor.check()
        governor.check()
    assert [e["event"] for e in opened] == ["breaker_opened"]
    budget = app.budget("agent:bot")
    assert [type(e) for e in app.events.get(budget.id)][-2:] == [
        Budget.BudgetAlerted,
        Budget.BreakerOpened,
    ]
