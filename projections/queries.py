"""Reads over the projections and the log, for the API and the CLI."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import Connection, sql
from psycopg.rows import DictRow

from projections.base import LOG_NAME

EVENTS_TABLE = "stateowner_events"


class BadCursor(ValueError):
    """A list cursor that this service did not hand out."""


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, item_id = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(item_id)
    except (ValueError, TypeError) as error:
        raise BadCursor("the cursor is not one this service handed out") from error


def item_row(conn: Connection[DictRow], item_id: uuid.UUID) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM item_status WHERE item_id = %s", (item_id,)).fetchone()


def list_items(
    conn: Connection[DictRow],
    *,
    topic: str | None,
    stage: str | None,
    status: str | None,
    agent: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Oldest first, keyset-paged on (created_at, item_id) so pages stay stable as items arrive."""
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (("topic", topic), ("stage", stage), ("status", status), ("agent", agent)):
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if cursor is not None:
        created_at, item_id = decode_cursor(cursor)
        conditions.append(sql.SQL("(created_at, item_id) > (%s, %s)"))
        params.extend([created_at, item_id])
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    rows = conn.execute(
        sql.SQL("SELECT * FROM item_status{} ORDER BY created_at, item_id LIMIT %s").format(where),
        [*params, limit + 1],
    ).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["item_id"])
    return rows, next_cursor


def next_ready_candidate(
    conn: Connection[DictRow],
    stage: str,
    now: datetime,
    passed_over: list[uuid.UUID],
    behind: dict[uuid.UUID, int],
    halted_topics: frozenset[str] = frozenset(),
) -> uuid.UUID | None:
    """The oldest ready row not yet tried and not known to be behind its item (`behind` maps
    items to a version they have reached); a row another claimer holds is skipped, so
    simultaneous claimers each lock a different item."""
    row = conn.execute(
        "SELECT item_id FROM item_status WHERE stage = %s AND status = 'ready' "
        "AND (not_before IS NULL OR not_before <= %s) AND item_id <> ALL(%s) AND topic <> ALL(%s) "
        "AND NOT EXISTS (SELECT 1 FROM unnest(%s::uuid[], %s::int[]) AS b(id, version) "
        "WHERE b.id = item_status.item_id AND b.version > item_status.version) "
        "ORDER BY ready_at, position LIMIT 1 FOR UPDATE SKIP LOCKED",
        (stage, now, passed_over, list(halted_topics), list(behind), list(behind.values())),
    ).fetchone()
    return row["item_id"] if row else None


def any_ready(conn: Connection[DictRow], stage: str, now: datetime) -> bool:
    """Whether any row is ready, held by another claimer or not."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM item_status WHERE stage = %s AND status = 'ready' "
        "AND (not_before IS NULL OR not_before <= %s)) AS found",
        (stage, now),
    ).fetchone()
    return bool(row and row["found"])


def next_not_before(conn: Connection[DictRow], stage: str, now: datetime) -> datetime | None:
    row = conn.execute(
        "SELECT min(not_before) AS at FROM item_status WHERE stage = %s AND status = 'ready' "
        "AND not_before > %s",
        (stage, now),
    ).fetchone()
    return row["at"] if row else None


def topic_inventory(conn: Connection[DictRow], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    inventory: dict[str, dict[str, Any]] = {
        name: {"total": 0, "by_status": {}, "by_stage": {}} for name in names
    }
    rows = conn.execute(
        "SELECT topic, stage, status, count(*) AS n FROM topic_items WHERE topic = ANY(%s) "
        "GROUP BY topic, stage, status",
        (list(names),),
    ).fetchall()
    for row in rows:
        entry = inventory[row["topic"]]
        entry["total"] += row["n"]
        entry["by_status"][row["status"]] = entry["by_status"].get(row["status"], 0) + row["n"]
        if row["stage"]:
            entry["by_stage"][row["stage"]] = entry["by_stage"].get(row["stage"], 0) + row["n"]
    return inventory


def topics(conn: Connection[DictRow], name: str | None = None) -> list[dict[str, Any]]:
    if name is None:
        rows = conn.execute("SELECT * FROM topics ORDER BY name").fetchall()
    else:
        rows = conn.execute("SELECT * FROM topics WHERE name = %s", (name,)).fetchall()
    inventory = topic_inventory(conn, [row["name"] for row in rows])
    return [{**row, "items": inventory[row["name"]]} for row in rows]


def agents(conn: Connection[DictRow]) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM agents ORDER BY name").fetchall()


def item_stored_events(conn: Connection[DictRow], item_id: uuid.UUID) -> list[dict[str, Any]]:
    return conn.execute(
        sql.SQL(
            "SELECT originator_id, originator_version, topic, state, notification_id "
            "FROM {} WHERE originator_id = %s ORDER BY originator_version"
        ).format(sql.Identifier(EVENTS_TABLE)),
        (item_id,),
    ).fetchall()


def event_position(conn: Connection[DictRow], aggregate_id: uuid.UUID, version: int) -> int | None:
    row = conn.execute(
        sql.SQL(
            "SELECT notification_id FROM {} WHERE originator_id = %s AND originator_version = %s"
        ).format(sql.Identifier(EVENTS_TABLE)),
        (aggregate_id, version),
    ).fetchone()
    return int(row["notification_id"]) if row else None


def view_position(conn: Connection[DictRow], view_name: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
            sql.Identifier(f"{view_name}_tracking")
        ),
        (LOG_NAME,),
    ).fetchone()
    return int(row["notification_id"]) if row else 0


def log_head(conn: Connection[DictRow]) -> int:
    row = conn.execute(
        sql.SQL("SELECT max(notification_id) AS head FROM {}").format(sql.Identifier(EVENTS_TABLE))
    ).fetchone()
    return int(row["head"] or 0) if row else 0


def bus_position(conn: Connection[DictRow]) -> int:
    row = conn.execute(
        "SELECT notification_id FROM stateowner_tracking WHERE application_name = %s", (LOG_NAME,)
    ).fetchone()
    return int(row["notification_id"]) if row else 0


def budgets_with_spend(
    conn: Connection[DictRow], window: str, scopes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Each budget (or those of `scopes`) with what its scope spent in the window."""
    where = sql.SQL("WHERE b.scope = ANY(%(scopes)s)") if scopes is not None else sql.SQL("")
    return conn.execute(
        sql.SQL(
            "SELECT b.*, COALESCE(s.spent_usd, 0) AS spent_usd, "
            "COALESCE(b.reset_window = %(window)s::date, false) AS reset_this_window "
            "FROM budgets b LEFT JOIN spend s ON s.scope = b.scope AND s.window_day = %(window)s::date "
            "{} ORDER BY b.scope"
        ).format(where),
        {"window": window, "scopes": list(scopes) if scopes is not None else None},
    ).fetchall()


def spent_today(conn: Connection[DictRow], window: str, scopes: Sequence[str]) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT scope, spent_usd FROM spend WHERE window_day = %s::date AND scope = ANY(%s)",
        (window, list(scopes)),
    ).fetchall()
    return {row["scope"]: row["spent_usd"] for row in rows}
