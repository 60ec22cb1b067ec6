"""item_status: one row per item — where it stands, who holds it, what it cost."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow

from domain.item import Item, ItemStopped, LeaseEnded, LeaseReported
from projections.base import (
    ADD_SPEND,
    NO_LEASE,
    NO_LEASE_ROW,
    Fold,
    Row,
    View,
    add_spend,
    handles,
    spend_of,
)

READY_CHANNEL = "stateowner_ready"


class ItemStatusView(View):
    name = "item_status"
    tables = {"item_status": ("item_id",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        table = self.table("item_status")
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "item_id uuid PRIMARY KEY, pipeline text NOT NULL, pipeline_version int NOT NULL, "
                "topic text NOT NULL, title text NOT NULL, stage text NOT NULL, status text NOT NULL, "
                "visit int NOT NULL, attempt int NOT NULL, agent text, lease_id text, "
                "lease_expires_at timestamptz, not_before timestamptz, ready_at timestamptz, "
                "visits jsonb NOT NULL, transitions int NOT NULL, cost_usd numeric NOT NULL, "
                "tokens_in bigint NOT NULL, tokens_out bigint NOT NULL, version int NOT NULL, "
                "position bigint NOT NULL, created_by text NOT NULL, created_at timestamptz NOT NULL, "
                "updated_at timestamptz NOT NULL)"
            ).format(table),
            # Added after release 0.1.0: a column of its own, so a table made before gains it.
            sql.SQL(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS eval boolean NOT NULL DEFAULT false"
            ).format(table),
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (stage, status, ready_at, position)"
            ).format(sql.Identifier("item_status_ready_idx"), table),
            # Listing by stage and status pages in (created_at, item_id) order: this index
            # hands over a page in that order, however many items the log holds.
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (stage, status, created_at, item_id)"
            ).format(sql.Identifier("item_status_stage_status_idx"), table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (topic, created_at, item_id)").format(
                sql.Identifier("item_status_topic_idx"), table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (status, created_at, item_id)").format(
                sql.Identifier("item_status_status_idx"), table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (created_at, item_id)").format(
                sql.Identifier("item_status_created_idx"), table
            ),
        ]

    def _update(
        self, curs: Cursor[DictRow], event: Any, position: int, assignments: str, **params: Any
    ) -> None:
        statement = self.composed(
            assignments,
            lambda: sql.SQL(
                "UPDATE {} SET {}, version = %(version)s, position = %(position)s, "
                "updated_at = %(at)s WHERE item_id = %(item_id)s"
            ).format(self.table("item_status"), sql.SQL(assignments)),
        )
        curs.execute(
            statement,
            {
                **params,
                "version": event.originator_version,
                "position": position,
                "at": event.timestamp,
                "item_id": event.originator_id,
            },
        )

    @handles(Item.ItemCreated)
    def item_created(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (item_id, pipeline, pipeline_version, topic, title, stage, status, "
                "visit, attempt, visits, transitions, cost_usd, tokens_in, tokens_out, version, "
                "position, created_by, created_at, updated_at, eval) VALUES (%s, %s, %s, %s, %s, '', "
                "'ready', 0, 0, '{{}}', 0, 0, 0, 0, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("item_status")),
            (
                event.originator_id,
                event.pipeline,
                event.pipeline_version,
                event.topic,
                event.title,
                event.originator_version,
                position,
                event.actor,
                event.timestamp,
                event.timestamp,
                event.eval,
            ),
        )

    @handles(Item.StageReady)
    def stage_ready(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(
            curs,
            event,
            position,
            "transitions = transitions + CASE WHEN stage <> '' AND "
            "COALESCE((visits ->> %(stage)s)::int, 0) <> %(visit)s THEN 1 ELSE 0 END, "
            "visits = jsonb_set(visits, ARRAY[%(stage)s], to_jsonb(%(visit)s::int)), "
            "stage = %(stage)s, status = 'ready', visit = %(visit)s, attempt = %(attempt)s, "
            f"not_before = %(not_before)s, ready_at = %(at)s, {NO_LEASE}",
            stage=event.stage,
            visit=event.visit,
            attempt=event.attempt,
            not_before=event.not_before,
        )
        if self.live:
            curs.execute("SELECT pg_notify(%s, %s)", (READY_CHANNEL, event.stage))

    @handles(Item.StageClaimed)
    def stage_claimed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(
            curs,
            event,
            position,
            "status = 'claimed', agent = %(agent)s, lease_id = %(lease_id)s, "
            "lease_expires_at = %(expires_at)s, attempt = %(attempt)s",
            agent=event.agent,
            lease_id=event.lease_id,
            expires_at=event.expires_at,
            attempt=event.attempt,
        )

    @handles(Item.LeaseRenewed)
    def lease_renewed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(
            curs, event, position, "lease_expires_at = %(expires_at)s", expires_at=event.expires_at
        )

    @handles(LeaseEnded)
    def lease_ended(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        if isinstance(event, LeaseReported):
            assignments, spend = f"status = 'advancing', {NO_LEASE}, {ADD_SPEND}", spend_of(event)
        else:
            assignments, spend = f"status = 'advancing', {NO_LEASE}", {}
        self._update(curs, event, position, assignments, **spend)

    @handles(ItemStopped)
    def item_stopped(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(
            curs,
            event,
            position,
            f"status = %(status)s, {NO_LEASE}",
            status=event.status,
        )

    @handles(Item.ItemResumed)
    def item_resumed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(curs, event, position, "status = status")


class ItemStatusFold(Fold):
    view = ItemStatusView
    jsonb = frozenset({"visits"})

    def _update(self, event: Any, position: int, **values: Any) -> Row | None:
        return self.update(
            "item_status",
            event.originator_id.int,
            **values,
            version=event.originator_version,
            position=position,
            updated_at=event.timestamp,
        )

    def item_created(self, event: Any, position: int) -> None:
        self.insert(
            "item_status",
            event.originator_id.int,
            {
                "item_id": event.originator_id,
                "pipeline": event.pipeline,
                "pipeline_version": event.pipeline_version,
                "topic": event.topic,
                "title": event.title,
                "stage": "",
                "status": "ready",
                "visit": 0,
                "attempt": 0,
                "agent": None,
                "lease_id": None,
                "lease_expires_at": None,
                "not_before": None,
                "ready_at": None,
                "visits": {},
                "transitions": 0,
                "cost_usd": Decimal(0),
                "tokens_in": 0,
                "tokens_out": 0,
                "version": event.originator_version,
                "position": position,
                "created_by": event.actor,
                "created_at": event.timestamp,
                "updated_at": event.timestamp,
                "eval": event.eval,
            },
        )

    def stage_ready(self, event: Any, position: int) -> None:
        row = self.tables["item_status"].get(event.originator_id.int)
        if row is None:
            return
        visits = row["visits"]
        if row["stage"] != "" and visits.get(event.stage, 0) != event.visit:
            row["transitions"] += 1
        visits[event.stage] = event.visit
        self._update(
            event,
            position,
            stage=event.stage,
            status="ready",
            visit=event.visit,
            attempt=event.attempt,
            not_before=event.not_before,
            ready_at=event.timestamp,
            **NO_LEASE_ROW,
        )

    def stage_claimed(self, event: Any, position: int) -> None:
        self._update(
            event,
            position,
            status="claimed",
            agent=event.agent,
            lease_id=event.lease_id,
            lease_expires_at=event.expires_at,
            attempt=event.attempt,
        )

    def lease_renewed(self, event: Any, position: int) -> None:
        self._update(event, position, lease_expires_at=event.expires_at)

    def lease_ended(self, event: Any, position: int) -> None:
        row = self._update(event, position, status="advancing", **NO_LEASE_ROW)
        if row is not None and isinstance(event, LeaseReported):
            add_spend(row, event)

    def item_stopped(self, event: Any, position: int) -> None:
        self._update(event, position, status=event.status, **NO_LEASE_ROW)

    def item_resumed(self, event: Any, position: int) -> None:
        self._update(event, position)
