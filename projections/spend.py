"""spend: what was spent per scope and UTC day, from the cost on completions and failures (an
eval item's only in scope `eval`, apart from production); budgets: each scope's limits and its
breaker's last alert, opening and reset."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow

from domain.budget import Budget, LimitsSet
from domain.guards import window_of
from domain.item import Item, LeaseReported
from projections.base import Fold, View, handles, joined, spend_of


class SpendView(View):
    name = "spend"
    tables = {"spend": ("window_day", "scope"), "spend_items": ("item_id",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (window_day date NOT NULL, scope text NOT NULL, "
                "spent_usd numeric NOT NULL, tokens_in bigint NOT NULL, tokens_out bigint NOT NULL, "
                "reports int NOT NULL, PRIMARY KEY (window_day, scope))"
            ).format(self.table("spend")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (item_id uuid PRIMARY KEY, topic text NOT NULL)"
            ).format(self.table("spend_items")),
            sql.SQL(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS eval boolean NOT NULL DEFAULT false"
            ).format(self.table("spend_items")),
        ]

    @handles(Item.ItemCreated)
    def item_created(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL("INSERT INTO {} (item_id, topic, eval) VALUES (%s, %s, %s)").format(
                self.table("spend_items")
            ),
            (event.originator_id, event.topic, event.eval),
        )

    @handles(LeaseReported)
    def stage_finished(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        statement = self.composed(
            "spent",
            lambda: sql.SQL(
                "INSERT INTO {spend} (window_day, scope, spent_usd, tokens_in, tokens_out, reports) "
                "SELECT %(window)s, s.scope, %(cost)s, %(tokens_in)s, %(tokens_out)s, 1 "
                "FROM {items} i, unnest(CASE WHEN i.eval THEN ARRAY['eval'] ELSE ARRAY['global', "
                "'stage:' || %(stage)s, 'agent:' || %(agent)s, 'topic:' || i.topic] END) AS s(scope) "
                "WHERE i.item_id = %(item_id)s "
                "ON CONFLICT (window_day, scope) DO UPDATE SET "
                "spent_usd = {spend}.spent_usd + EXCLUDED.spent_usd, "
                "tokens_in = {spend}.tokens_in + EXCLUDED.tokens_in, "
                "tokens_out = {spend}.tokens_out + EXCLUDED.tokens_out, "
                "reports = {spend}.reports + 1"
            ).format(spend=self.table("spend"), items=self.table("spend_items")),
        )
        curs.execute(
            statement,
            {
                **spend_of(event),
                "window": window_of(event.at),
                "stage": event.stage,
                "agent": event.agent,
                "item_id": event.originator_id,
            },
        )


class BudgetsView(View):
    name = "budgets"
    tables = {"budgets": ("scope",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (scope text PRIMARY KEY, alert_usd numeric NOT NULL, "
                "halt_usd numeric NOT NULL, alerted_window date, opened_window date, "
                "reset_window date, alerts int NOT NULL, halts int NOT NULL, "
                "updated_at timestamptz NOT NULL)"
            ).format(self.table("budgets"))
        ]

    @handles(LimitsSet)
    def limits(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (scope, alert_usd, halt_usd, alerts, halts, updated_at) "
                "VALUES (%s, %s, %s, 0, 0, %s) ON CONFLICT (scope) DO UPDATE SET "
                "alert_usd = EXCLUDED.alert_usd, halt_usd = EXCLUDED.halt_usd, "
                "updated_at = EXCLUDED.updated_at"
            ).format(self.table("budgets")),
            (event.scope, event.alert_usd, event.halt_usd, event.timestamp),
        )

    def _window(self, curs: Cursor[DictRow], event: Any, assignments: str) -> None:
        curs.execute(
            sql.SQL("UPDATE {} SET {}, updated_at = %(at)s WHERE scope = %(scope)s").format(
                self.table("budgets"), sql.SQL(assignments)
            ),
            {"window": event.window, "at": event.timestamp, "scope": event.scope},
        )

    @handles(Budget.BudgetAlerted)
    def alerted(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._window(curs, event, "alerted_window = %(window)s, alerts = alerts + 1")

    @handles(Budget.BreakerOpened)
    def opened(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._window(curs, event, "opened_window = %(window)s, halts = halts + 1")

    @handles(Budget.BreakerReset)
    def reset(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._window(curs, event, "reset_window = %(window)s")


class SpendFold(Fold):
    view = SpendView

    def item_created(self, event: Any, position: int) -> None:
        self.insert(
            "spend_items",
            event.originator_id.int,
            {"item_id": event.originator_id, "topic": event.topic, "eval": event.eval},
        )

    def stage_finished(self, event: Any, position: int) -> None:
        item = self.tables["spend_items"].get(event.originator_id.int)
        if item is None:
            return
        window = date.fromisoformat(window_of(event.at))
        spend = self.tables["spend"]
        scopes = (
            ("eval",)
            if item["eval"]
            else (
                "global",
                joined("stage:", event.stage),
                joined("agent:", event.agent),
                joined("topic:", item["topic"]),
            )
        )
        for scope in scopes:
            row = spend.get((window, scope))
            if row is None:
                row = spend[window, scope] = {
                    "window_day": window,
                    "scope": scope,
                    "spent_usd": Decimal(0),
                    "tokens_in": 0,
                    "tokens_out": 0,
                    "reports": 0,
                }
            row["spent_usd"] += event.cost_usd
            row["tokens_in"] += event.tokens_in
            row["tokens_out"] += event.tokens_out
            row["reports"] += 1


class BudgetsFold(Fold):
    view = BudgetsView

    def limits(self, event: Any, position: int) -> None:
        row = self.tables["budgets"].get(event.scope)
        if row is None:
            self.insert(
                "budgets",
                event.scope,
                {
                    "scope": event.scope,
                    "alert_usd": event.alert_usd,
                    "halt_usd": event.halt_usd,
                    "alerted_window": None,
                    "opened_window": None,
                    "reset_window": None,
                    "alerts": 0,
                    "halts": 0,
                    "updated_at": event.timestamp,
                },
            )
        else:
            row.update(
                alert_usd=event.alert_usd, halt_usd=event.halt_usd, updated_at=event.timestamp
            )

    def _window(self, event: Any, column: str, counter: str | None = None) -> None:
        row = self.tables["budgets"].get(event.scope)
        if row is not None:
            row[column] = date.fromisoformat(event.window)
            row["updated_at"] = event.timestamp
            if counter is not None:
                row[counter] += 1

    def alerted(self, event: Any, position: int) -> None:
        self._window(event, "alerted_window", "alerts")

    def opened(self, event: Any, position: int) -> None:
        self._window(event, "opened_window", "halts")

    def reset(self, event: Any, position: int) -> None:
        self._window(event, "reset_window")
