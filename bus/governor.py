"""The cost circuit breaker's watchman: after spend lands, it records each scope's crossing of
its alert and halt levels, once per window, as events on the scope's Budget."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from domain.application import StateOwner
from domain.budget import Budget
from domain.errors import ConcurrentUpdate, NotFound
from domain.guards import window_of
from domain.item import LeaseReported
from domain.values import By
from projections.queries import Queries

log = structlog.get_logger(__name__)

GOVERNOR_ACTOR = "system:governor"
SPEND_WAIT_SECONDS = 2.0


class Governor:
    def __init__(self, app: StateOwner, queries: Queries) -> None:
        self.app = app
        self.queries = queries

    def after_batch(self, batch: Sequence[tuple[Any, int]]) -> None:
        """Check the budgets once the spend of this batch's reports has been counted."""
        costly = [p for e, p in batch if isinstance(e, LeaseReported) and e.cost_usd > 0]
        if costly:
            self._wait_for_spend(costly[-1])
            self.check()

    def _wait_for_spend(self, position: int) -> None:
        deadline = time.monotonic() + SPEND_WAIT_SECONDS
        while self.queries.view_position("spend") < position and time.monotonic() < deadline:
            time.sleep(0.002)

    def check(self) -> None:
        """Level-triggered: whatever was missed (a crash, a late projection) is caught next time."""
        window = window_of(self.app.clock())
        for budget in self.queries.budgets(window):
            if budget.crossing_recorded:
                continue
            try:
                recorded = self.app.record_crossing(
                    budget.scope,
                    window,
                    budget.spent_usd,
                    halted=budget.halted,
                    by=By(GOVERNOR_ACTOR, f"spend:{window}"),
                )
            except (NotFound, ConcurrentUpdate):
                continue
            for event in recorded:
                log.warning(
                    "budget_alert" if isinstance(event, Budget.BudgetAlerted) else "breaker_opened",
                    scope=budget.scope,
                    window=window,
                    spent_usd=float(budget.spent_usd),
                    alert_usd=float(budget.alert_usd),
                    halt_usd=float(budget.halt_usd),
                )
