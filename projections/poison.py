"""Poison events: an event a view cannot apply is recorded here, with the view stopped before it,
until an operator decides to skip it (or a fixed view is rebuilt). Other views go on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor, sql
from psycopg.rows import DictRow

TABLE = "projection_dead_letters"
OPEN = "open"
SKIPPED = "skipped"


class NotDeadLettered(Exception):
    """The position is not an open dead letter of that view: there is nothing to skip."""


@dataclass(frozen=True)
class DeadLetter:
    view: str
    position: int
    event_type: str
    error: str
    status: str
    first_seen: datetime
    attempts: int
    reason: str | None
    skipped_by: str | None
    skipped_at: datetime | None

    def body(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "event_type": self.event_type,
            "error": self.error,
            "status": self.status,
            "first_seen": self.first_seen,
            "attempts": self.attempts,
            "reason": self.reason,
            "skipped_by": self.skipped_by,
            "skipped_at": self.skipped_at,
        }


@dataclass(frozen=True)
class Poison:
    """An event a view could not apply, and why."""

    position: int
    event_type: str
    error: str


class DeadLetters:
    """The dead-letter table, beside the views it speaks of (same schema, same transactions)."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.table = sql.SQL("{}.{}").format(
            sql.Identifier(datastore.schema), sql.Identifier(TABLE)
        )

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.datastore.schema)
                )
            )
            curs.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (view text NOT NULL, position bigint NOT NULL, "
                    "event_type text NOT NULL, error text NOT NULL, status text NOT NULL, "
                    "first_seen timestamptz NOT NULL DEFAULT now(), attempts int NOT NULL, "
                    "reason text, skipped_by text, skipped_at timestamptz, "
                    "PRIMARY KEY (view, position))"
                ).format(self.table)
            )

    def record(self, curs: Cursor[DictRow], view: str, poison: Poison) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (view, position, event_type, error, status, attempts) "
                "VALUES (%s, %s, %s, %s, %s, 1) ON CONFLICT (view, position) DO UPDATE SET "
                "error = EXCLUDED.error, attempts = {}.attempts + 1, status = EXCLUDED.status"
            ).format(self.table, self.table),
            (view, poison.position, poison.event_type, poison.error, OPEN),
        )

    def stopped(self, curs: Cursor[DictRow]) -> set[str]:
        """The views stopped at an open dead letter."""
        row = curs.execute(
            sql.SQL("SELECT {} AS stopped").format(self.stopped_expression())
        ).fetchone()
        return set(row["stopped"] or ()) if row else set()

    def stopped_expression(self) -> sql.Composed:
        """An expression for the names of the views stopped at an open dead letter (an array,
        NULL for none), to read within a larger statement."""
        return sql.SQL("(SELECT array_agg(DISTINCT view) FROM {} WHERE status = {})").format(
            self.table, sql.Literal(OPEN)
        )

    def all(self, view: str | None = None) -> list[DeadLetter]:
        with self.datastore.transaction(commit=False) as curs:
            rows = curs.execute(
                sql.SQL(
                    "SELECT * FROM {} WHERE %s::text IS NULL OR view = %s ORDER BY view, position"
                ).format(self.table),
                (view, view),
            ).fetchall()
        return [DeadLetter(**row) for row in rows]

    def skipped_positions(self, view: str) -> set[int]:
        return {letter.position for letter in self.all(view) if letter.status == SKIPPED}

    def skip(
        self, curs: Cursor[DictRow], view: str, position: int, reason: str, actor: str
    ) -> None:
        """Mark an open dead letter skipped; the caller moves the view past it in the same
        transaction. Refused unless the position is an open dead letter of the view."""
        found = curs.execute(
            sql.SQL(
                "UPDATE {} SET status = %s, reason = %s, skipped_by = %s, skipped_at = now() "
                "WHERE view = %s AND position = %s AND status = %s RETURNING position"
            ).format(self.table),
            (SKIPPED, reason, actor, view, position, OPEN),
        ).fetchone()
        if found is None:
            raise NotDeadLettered(f"position {position} is not an open dead letter of {view}")

    def resolve(self, curs: Cursor[DictRow], view: str, applied_up_to: int) -> None:
        """A rebuilt view applied its open dead letters after all: they are no longer open."""
        curs.execute(
            sql.SQL("DELETE FROM {} WHERE view = %s AND status = %s AND position <= %s").format(
                self.table
            ),
            (view, OPEN, applied_up_to),
        )
