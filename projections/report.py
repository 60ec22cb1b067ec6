"""report: what the pipeline report measures — each item's span and outcome, and each stage
visit's waiting (ready → claimed) and working (claimed → reported) time."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow

from domain.item import Item, ItemStopped, LeaseEnded, LeaseReported
from projections.base import Fold, Row, View, handles


def is_eval(event: Any) -> bool:
    """Eval items (run by the evaluation harness) stay out of production reports. The flag is
    `eval` on ItemCreated; a log written before it has no such field."""
    return bool(getattr(event, "eval", False))


class ReportView(View):
    name = "report"
    tables = {"report_items": ("item_id",), "report_stages": ("item_id", "version")}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (item_id uuid PRIMARY KEY, pipeline text NOT NULL, "
                "eval boolean NOT NULL, status text NOT NULL, cost_usd numeric NOT NULL, "
                "parked int NOT NULL, halted int NOT NULL, expired int NOT NULL, "
                "created_at timestamptz NOT NULL, ended_at timestamptz)"
            ).format(self.table("report_items")),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (pipeline, created_at)").format(
                sql.Identifier("report_items_pipeline_idx"), self.table("report_items")
            ),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (item_id uuid NOT NULL, version int NOT NULL, "
                "stage text NOT NULL, ready_at timestamptz NOT NULL, claimed_at timestamptz, "
                "ended_at timestamptz, PRIMARY KEY (item_id, version))"
            ).format(self.table("report_stages")),
        ]

    def _item(self, curs: Cursor[DictRow], event: Any, assignments: str, **params: Any) -> None:
        statement = self.composed(
            "item:" + assignments,
            lambda: sql.SQL("UPDATE {} SET {} WHERE item_id = %(item_id)s").format(
                self.table("report_items"), sql.SQL(assignments)
            ),
        )
        curs.execute(statement, {**params, "item_id": event.originator_id, "at": event.timestamp})

    def _visit(self, curs: Cursor[DictRow], event: Any, assignments: str) -> None:
        """Update the item's current stage visit (its latest StageReady)."""
        statement = self.composed(
            "visit:" + assignments,
            lambda: sql.SQL(
                "UPDATE {t} SET {} WHERE item_id = %(item_id)s AND version = "
                "(SELECT max(version) FROM {t} WHERE item_id = %(item_id)s)"
            ).format(sql.SQL(assignments), t=self.table("report_stages")),
        )
        curs.execute(statement, {"item_id": event.originator_id, "at": event.timestamp})

    @handles(Item.ItemCreated)
    def item_created(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (item_id, pipeline, eval, status, cost_usd, parked, halted, "
                "expired, created_at) VALUES (%s, %s, %s, 'active', 0, 0, 0, 0, %s)"
            ).format(self.table("report_items")),
            (event.originator_id, event.pipeline, is_eval(event), event.timestamp),
        )

    @handles(Item.StageReady)
    def stage_ready(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        # A retry's backoff is not time spent waiting for an agent: the wait starts when it may.
        ready_at = max(event.timestamp, event.not_before or event.timestamp)
        statement = self.composed(
            "ready",
            lambda: sql.SQL(
                "INSERT INTO {} (item_id, version, stage, ready_at) VALUES (%s, %s, %s, %s)"
            ).format(self.table("report_stages")),
        )
        curs.execute(
            statement, (event.originator_id, event.originator_version, event.stage, ready_at)
        )
        self._item(curs, event, "status = 'active', ended_at = NULL")

    @handles(Item.StageClaimed)
    def stage_claimed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._visit(curs, event, "claimed_at = %(at)s")

    @handles(LeaseEnded)
    def lease_ended(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._visit(curs, event, "ended_at = %(at)s")
        if isinstance(event, LeaseReported):
            self._item(curs, event, "cost_usd = cost_usd + %(cost)s", cost=event.cost_usd)
        elif isinstance(event, Item.LeaseExpired):
            self._item(curs, event, "expired = expired + 1")

    @handles(ItemStopped)
    def item_stopped(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        counter = {"parked": ", parked = parked + 1", "halted": ", halted = halted + 1"}
        self._item(
            curs,
            event,
            f"status = %(status)s, ended_at = %(at)s{counter.get(event.status, '')}",
            status=event.status,
        )

    @handles(Item.ItemResumed)
    def item_resumed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._item(curs, event, "status = 'active', ended_at = NULL")


class ReportFold(Fold):
    view = ReportView

    def __init__(self) -> None:
        super().__init__()
        # Each item's latest stage visit: the row its `max(version)` names.
        self._visits: dict[int, Row] = {}

    def _item(self, event: Any, **values: Any) -> Row | None:
        return self.update("report_items", event.originator_id.int, **values)

    def _visit(self, event: Any, column: str) -> None:
        visit = self._visits.get(event.originator_id.int)
        if visit is not None:
            visit[column] = event.timestamp

    def item_created(self, event: Any, position: int) -> None:
        self.insert(
            "report_items",
            event.originator_id.int,
            {
                "item_id": event.originator_id,
                "pipeline": event.pipeline,
                "eval": is_eval(event),
                "status": "active",
                "cost_usd": Decimal(0),
                "parked": 0,
                "halted": 0,
                "expired": 0,
                "created_at": event.timestamp,
                "ended_at": None,
            },
        )

    def stage_ready(self, event: Any, position: int) -> None:
        item = event.originator_id.int
        version = event.originator_version
        visit = self.insert(
            "report_stages",
            (item, version),
            {
                "item_id": event.originator_id,
                "version": version,
                "stage": event.stage,
                "ready_at": max(event.timestamp, event.not_before or event.timestamp),
                "claimed_at": None,
                "ended_at": None,
            },
        )
        latest = self._visits.get(item)
        if latest is None or latest["version"] < version:
            self._visits[item] = visit
        self._item(event, status="active", ended_at=None)

    def stage_claimed(self, event: Any, position: int) -> None:
        self._visit(event, "claimed_at")

    def lease_ended(self, event: Any, position: int) -> None:
        self._visit(event, "ended_at")
        if isinstance(event, LeaseReported):
            row = self._item(event)
            if row is not None:
                row["cost_usd"] += event.cost_usd
        elif isinstance(event, Item.LeaseExpired):
            row = self._item(event)
            if row is not None:
                row["expired"] += 1

    def item_stopped(self, event: Any, position: int) -> None:
        row = self._item(event, status=event.status, ended_at=event.timestamp)
        if row is not None and event.status in ("parked", "halted"):
            row[event.status] += 1

    def item_resumed(self, event: Any, position: int) -> None:
        self._item(event, status="active", ended_at=None)
