"""audit: one row per event — who did what, to which aggregate, when, and why."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow

from domain.item import Item
from projections.base import Fold, View


class AuditView(View):
    name = "audit"
    tables = {"audit": ("position",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        table = self.table("audit")
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, at timestamptz NOT NULL, "
                "actor text, type text NOT NULL, aggregate text NOT NULL, aggregate_id uuid NOT NULL, "
                "version int NOT NULL, item_id uuid, caused_by text)"
            ).format(table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (actor, position)").format(
                sql.Identifier("audit_actor_idx"), table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (type, position)").format(
                sql.Identifier("audit_type_idx"), table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (item_id, position)").format(
                sql.Identifier("audit_item_idx"), table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (at)").format(
                sql.Identifier("audit_at_idx"), table
            ),
        ]

    def apply_event(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        aggregate = type(event).__qualname__.split(".")[0]
        statement = self.composed(
            "insert",
            lambda: sql.SQL(
                "INSERT INTO {} (position, at, actor, type, aggregate, aggregate_id, version, "
                "item_id, caused_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("audit")),
        )
        curs.execute(
            statement,
            (
                position,
                event.timestamp,
                getattr(event, "actor", None),
                type(event).__name__,
                aggregate,
                event.originator_id,
                event.originator_version,
                event.originator_id if isinstance(event, Item.Event) else None,
                getattr(event, "caused_by", None),
            ),
        )


class AuditFold(Fold):
    """One row per event and never a change: tuples in the order of the log, handed over as
    they are made."""

    view = AuditView
    streamed = ("audit",)
    columns = (
        "position",
        "at",
        "actor",
        "type",
        "aggregate",
        "aggregate_id",
        "version",
        "item_id",
        "caused_by",
    )

    def __init__(self) -> None:
        super().__init__()
        self.audit: list[tuple[Any, ...]] = []
        self._kinds: dict[type, tuple[str, str, bool]] = {}

    def apply_event(self, event: Any, position: int) -> None:
        event_class = type(event)
        kind = self._kinds.get(event_class)
        if kind is None:
            kind = self._kinds[event_class] = (
                event_class.__name__,
                event_class.__qualname__.split(".")[0],
                issubclass(event_class, Item.Event),
            )
        self.audit.append(
            (
                position,
                event.timestamp,
                getattr(event, "actor", None),
                kind[0],
                kind[1],
                event.originator_id,
                event.originator_version,
                event.originator_id if kind[2] else None,
                getattr(event, "caused_by", None),
            )
        )

    def rows(self, table: str) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
        made, self.audit = self.audit, []
        return self.columns, made
