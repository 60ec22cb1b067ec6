"""The cost circuit breaker's watchman: after spend lands, it records each scope's crossing of
its alert and halt levels, once per window, as events on the scope's Budget."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from domain.application import StateOwner
from domain.errors import ConcurrentUpdate, NotFound
from domain.guards import breaker_state, window_of
from projections import queries

log = structlog.get_logger(__name__)

GOVERNOR_ACTOR = "system:governor"
COST_EVENTS = frozenset({"StageCompleted", "StageFailed"})
SPEND_WAIT_SECONDS = 2.0


class Governor:
    def __init__(self, app: StateOwner, conninfo: str) -> None:
        self.app = app
        self.conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo, autocommit=True, row_factory=dict_row, connect_timeout=5
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def after_batch(self, batch: Sequence[tuple[Any, int]]) -> None:
        """Check the budgets once the spend of this batch's reports has been counted."""
        costly = [p for e, p in batch if type(e).__name__ in COST_EVENTS and e.cost_usd > 0]
        if costly:
            self._wait_for_spend(costly[-1])
            self.check()

    def _wait_for_spend(self, position: int) -> None:
        deadline = time.monotonic() + SPEND_WAIT_SECONDS
        conn = self._connection()
        while queries.view_position(conn, "spend") < position and time.monotonic() < deadline:
            time.sleep(0.002)

    def check(self) -> None:
        """Level-triggered: whatever was missed (a crash, a late projection) is caught next time."""
        window = window_of(self.app.clock())
        for row in queries.budgets_with_spend(self._connection(), window):
            state = breaker_state(
                row["spent_usd"],
                row["alert_usd"],
                row["halt_usd"],
                reset_this_window=row["reset_this_window"],
            )
            already = (
                row["alerted_window"] is not None and row["alerted_window"].isoformat() == window
            )
            opened = row["opened_window"] is not None and row["opened_window"].isoformat() == window
            if state == "ok" or (already and (state == "alerting" or opened)):
                continue
            try:
                recorded = self.app.record_crossing(
                    row["scope"],
                    window=window,
                    spent_usd=row["spent_usd"],
                    halted=state == "halted",
                    actor=GOVERNOR_ACTOR,
                    caused_by=f"spend:{window}",
                )
            except (NotFound, ConcurrentUpdate):
                continue
            for name in recorded:
                log.warning(
                    "budget_alert" if name == "BudgetAlerted" else "breaker_opened",
                    scope=row["scope"],
                    window=window,
                    spent_usd=float(row["spent_usd"]),
                    alert_usd=float(row["alert_usd"]),
                    halt_usd=float(row["halt_usd"]),
                )
