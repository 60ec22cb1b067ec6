"""Incident webhooks: their configuration, the outbox of deliveries, and the tracked follower
that fills it.

The follower only writes deliveries, in one transaction with its position; sender workers
(`bus/webhooks.py`) post them. So an endpoint that is slow or gone delays its own deliveries and
nothing else: not another webhook, not the bus, not the projections.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from psycopg import Connection, sql
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool

from domain.item import Item
from domain.recorded import Recorded
from projections.base import PositionMoved, View
from projections.queries import EVENTS_TABLE

DELIVERY_NAMESPACE = uuid.UUID("0b7f5d0e-8c4a-4f7e-9a53-2f1c8e6d4b11")
# Events that are not on the log: the service's own incidents.
FOLLOWER_STALLED = "FollowerStalled"
INCIDENT_TYPES = frozenset({FOLLOWER_STALLED})
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}
NEVER_SENT = {"token_hash", "request_digest", "fingerprint", "actor", "caused_by"}
MAX_ERROR_CHARS = 500


def _event_classes(base: type) -> list[type]:
    found: list[type] = []
    subclasses: list[type] = base.__subclasses__()
    for cls in subclasses:
        found.append(cls)
        found.extend(_event_classes(cls))
    return found


def event_types() -> frozenset[str]:
    """Every event type a webhook may ask for: each aggregate's events (declared inside it),
    and the service's own incidents."""
    logged = {
        cls.__name__
        for cls in _event_classes(Recorded)
        if "." in cls.__qualname__ and "<locals>" not in cls.__qualname__
    }
    return frozenset(logged) | INCIDENT_TYPES


def delivery_id(webhook: str, what: str) -> uuid.UUID:
    """A delivery's id derives from the webhook and what it carries, so writing it twice
    (a follower re-processing a batch, two watchdogs) is one delivery."""
    return uuid.uuid5(DELIVERY_NAMESPACE, f"{webhook}\n{what}")


def event_payload(event: Any, position: int) -> dict[str, Any]:
    """A log event as a webhook receives it: the shape of `GET /v1/events`' entries."""
    data = {k: v for k, v in vars(event).items() if k not in ENVELOPE | NEVER_SENT}
    return {
        "type": type(event).__name__,
        "position": position,
        "version": event.originator_version,
        "aggregate_id": str(event.originator_id),
        "item_id": str(event.originator_id) if isinstance(event, Item.Event) else None,
        "at": event.timestamp.isoformat(),
        "actor": getattr(event, "actor", None),
        "caused_by": getattr(event, "caused_by", None),
        "data": data,
    }


def encode(payload: dict[str, Any]) -> str:
    """The exact bytes a delivery sends (and signs), kept so every attempt sends the same."""
    return json.dumps(payload, default=str, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    events: list[str]
    after_position: int
    created_at: datetime
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class Delivery:
    """A delivery claimed for sending, with what posting it needs."""

    id: uuid.UUID
    webhook: str
    event_type: str
    body: str
    attempts: int
    url: str
    secret: str


def _table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def table_statements(schema: str) -> list[sql.Composed]:
    hooks, deliveries = _table(schema, "webhooks"), _table(schema, "webhook_deliveries")
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, url text NOT NULL, "
            "events text[] NOT NULL, secret text NOT NULL, after_position bigint NOT NULL, "
            "created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, "
            "updated_by text NOT NULL)"
        ).format(hooks),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id uuid PRIMARY KEY, seq bigserial UNIQUE, "
            "webhook text NOT NULL REFERENCES {} (name) ON DELETE CASCADE, "
            "event_type text NOT NULL, position bigint, item_id uuid, body text NOT NULL, "
            "status text NOT NULL, attempts int NOT NULL DEFAULT 0, "
            "next_attempt_at timestamptz NOT NULL, claimed_until timestamptz, "
            "last_status int, last_error text, created_at timestamptz NOT NULL DEFAULT now(), "
            "delivered_at timestamptz)"
        ).format(deliveries, hooks),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx ON {} "
            "(webhook, status, next_attempt_at)"
        ).format(deliveries),
    ]


INSERT_DELIVERY = (
    "INSERT INTO {} (id, webhook, event_type, position, item_id, body, status, next_attempt_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, 'pending', now()) ON CONFLICT (id) DO NOTHING"
)


class WebhookOutbox(View):
    """The tracked follower: for each event a webhook asked for (after the webhook was put), a
    pending delivery, written with the position in one transaction — exactly once."""

    name = "webhooks"
    tables: ClassVar[dict[str, tuple[str, ...]]] = {}  # configuration: never rebuilt

    def __init__(self, datastore: Any, on_written: Callable[[], None] | None = None) -> None:
        super().__init__(datastore)
        self.on_written = on_written

    def table_statements(self) -> Sequence[sql.Composed]:
        return table_statements(self.datastore.schema)

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        if not batch:
            return
        written = 0
        with self.datastore.transaction(commit=True) as curs:
            if self._locked_position(curs) != after:
                raise PositionMoved(self.name)
            hooks = curs.execute(
                sql.SQL("SELECT name, events, after_position FROM {}").format(
                    self.table("webhooks")
                )
            ).fetchall()
            rows = []
            for event, position in batch:
                kind = type(event).__name__
                for hook in hooks:
                    if kind in hook["events"] and position > hook["after_position"]:
                        rows.append(self._row(hook["name"], event, position))
            if rows:
                curs.executemany(
                    sql.SQL(INSERT_DELIVERY).format(self.table("webhook_deliveries")), rows
                )
                written = len(rows)
            self.set_position(curs, batch[-1][1])
        if written and self.on_written is not None:
            self.on_written()

    @staticmethod
    def _row(webhook: str, event: Any, position: int) -> tuple[Any, ...]:
        identity = delivery_id(webhook, f"position:{position}")
        payload = {
            "delivery_id": str(identity),
            "webhook": webhook,
            **event_payload(event, position),
        }
        item_id = event.originator_id if isinstance(event, Item.Event) else None
        return (identity, webhook, type(event).__name__, position, item_id, encode(payload))


class UnknownDelivery(LookupError):
    """No such delivery of that webhook."""


class NotRedrivable(ValueError):
    """The delivery is still pending: it is being tried already."""


class Webhooks:
    """Every read and write of webhooks and their deliveries outside the follower's own."""

    def __init__(self, pool: ConnectionPool[Connection[DictRow]], schema: str = "public") -> None:
        self.pool = pool
        self.hooks = _table(schema, "webhooks")
        self.deliveries = _table(schema, "webhook_deliveries")

    # -- configuration ---------------------------------------------------------------------------

    def put(self, name: str, url: str, events: list[str], secret: str, by: str) -> Webhook:
        """Create or change a webhook. A new one receives events after the log's head now."""
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, url, events, secret, after_position, created_at, "
                    "updated_at, updated_by) VALUES (%s, %s, %s, %s, "
                    "(SELECT COALESCE(max(notification_id), 0) FROM {}), "
                    "now(), now(), %s) ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url, "
                    "events = EXCLUDED.events, secret = EXCLUDED.secret, updated_at = now(), "
                    "updated_by = EXCLUDED.updated_by RETURNING *"
                ).format(self.hooks, sql.Identifier(EVENTS_TABLE)),
                (name, url, events, secret, by),
            ).fetchone()
        assert row is not None
        return _webhook(row)

    def get(self, name: str) -> Webhook | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT * FROM {} WHERE name = %s").format(self.hooks), (name,)
            ).fetchone()
        return _webhook(row) if row else None

    def all(self) -> list[Webhook]:
        with self.pool.connection() as conn:
            rows = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY name").format(self.hooks))
            return [_webhook(row) for row in rows.fetchall()]

    def delete(self, name: str) -> bool:
        """Remove the webhook and its deliveries; False when there was none."""
        with self.pool.connection() as conn:
            deleted = conn.execute(
                sql.SQL("DELETE FROM {} WHERE name = %s").format(self.hooks), (name,)
            )
            return deleted.rowcount > 0

    def counts(self, name: str) -> dict[str, int]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT status, count(*) AS n FROM {} WHERE webhook = %s GROUP BY status"
                ).format(self.deliveries),
                (name,),
            ).fetchall()
        found = {PENDING: 0, DELIVERED: 0, DEAD: 0}
        found.update({row["status"]: int(row["n"]) for row in rows})
        return found

    # -- deliveries ------------------------------------------------------------------------------

    def deliveries_page(
        self, name: str, status: str | None, after: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; `after` is the last page's cursor (its last row's sequence number)."""
        conditions = [sql.SQL("webhook = %(name)s")]
        if status is not None:
            conditions.append(sql.SQL("status = %(status)s"))
        if after is not None:
            conditions.append(sql.SQL("seq < %(after)s"))
        with self.pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT id, seq, event_type, position, item_id, status, attempts, "
                    "next_attempt_at, last_status, last_error, created_at, delivered_at, body "
                    "FROM {} WHERE {} ORDER BY seq DESC LIMIT %(limit)s"
                ).format(self.deliveries, sql.SQL(" AND ").join(conditions)),
                {"name": name, "status": status, "after": after, "limit": limit + 1},
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (int(rows[-1]["seq"]) if more else None)

    def enqueue(self, event_type: str, what: str, payload: dict[str, Any]) -> int:
        """A delivery of an incident that is not on the log, to each webhook that asked for its
        type; the same `what` twice is one delivery per webhook. Returns how many are new."""
        with self.pool.connection() as conn:
            hooks = conn.execute(
                sql.SQL("SELECT name FROM {} WHERE %s = ANY(events)").format(self.hooks),
                (event_type,),
            ).fetchall()
            new = 0
            for hook in hooks:
                identity = delivery_id(hook["name"], what)
                body = {"delivery_id": str(identity), "webhook": hook["name"], **payload}
                inserted = conn.execute(
                    sql.SQL(INSERT_DELIVERY).format(self.deliveries),
                    (identity, hook["name"], event_type, None, None, encode(body)),
                )
                new += inserted.rowcount
        return new

    def due(self) -> list[str]:
        """The webhooks with a delivery to try now."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT DISTINCT webhook FROM {} WHERE status = 'pending' "
                    "AND next_attempt_at <= now() "
                    "AND (claimed_until IS NULL OR claimed_until < now())"
                ).format(self.deliveries)
            ).fetchall()
        return [row["webhook"] for row in rows]

    def claim(self, name: str, hold_seconds: float) -> Delivery | None:
        """Take the webhook's oldest delivery due now for `hold_seconds` (a sender that dies
        holding it lets it go then); None when none is due."""
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "UPDATE {d} SET claimed_until = now() + make_interval(secs => %(hold)s) "
                    "WHERE id = (SELECT id FROM {d} WHERE webhook = %(name)s "
                    "AND status = 'pending' AND next_attempt_at <= now() "
                    "AND (claimed_until IS NULL OR claimed_until < now()) "
                    "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
                    "RETURNING id, webhook, event_type, body, attempts, "
                    "(SELECT url FROM {h} WHERE name = %(name)s) AS url, "
                    "(SELECT secret FROM {h} WHERE name = %(name)s) AS secret"
                ).format(d=self.deliveries, h=self.hooks),
                {"name": name, "hold": hold_seconds},
            ).fetchone()
        if row is None or row["url"] is None:
            return None
        return Delivery(**row)

    def delivered(self, delivery: Delivery, status: int) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'delivered', attempts = attempts + 1, "
                    "last_status = %s, last_error = NULL, delivered_at = now(), "
                    "claimed_until = NULL WHERE id = %s"
                ).format(self.deliveries),
                (status, delivery.id),
            )

    def failed(
        self,
        delivery: Delivery,
        status: int | None,
        error: str,
        retry_in: float | None,
    ) -> None:
        """Record a failed attempt: tried again in `retry_in` seconds, or dead (None)."""
        with self.pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET attempts = attempts + 1, last_status = %(status)s, "
                    "last_error = %(error)s, claimed_until = NULL, "
                    "status = CASE WHEN %(retry)s::float8 IS NULL THEN 'dead' ELSE 'pending' END, "
                    "next_attempt_at = now() + make_interval(secs => COALESCE(%(retry)s, 0)) "
                    "WHERE id = %(id)s"
                ).format(self.deliveries),
                {
                    "status": status,
                    "error": error[:MAX_ERROR_CHARS],
                    "retry": retry_in,
                    "id": delivery.id,
                },
            )

    def redrive(self, name: str, identity: uuid.UUID) -> dict[str, Any]:
        """Send a dead (or delivered) delivery again from its first attempt, now."""
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'pending', attempts = 0, next_attempt_at = now(), "
                    "claimed_until = NULL WHERE id = %s AND webhook = %s "
                    "AND status <> 'pending' RETURNING id"
                ).format(self.deliveries),
                (identity, name),
            ).fetchone()
            if row is None:
                found = conn.execute(
                    sql.SQL("SELECT status FROM {} WHERE id = %s AND webhook = %s").format(
                        self.deliveries
                    ),
                    (identity, name),
                ).fetchone()
                if found is None:
                    raise UnknownDelivery(f"webhook {name!r} has no delivery {identity}")
                raise NotRedrivable(f"delivery {identity} is pending: it is being tried already")
            delivery = conn.execute(
                sql.SQL(
                    "SELECT id, seq, event_type, position, item_id, status, attempts, "
                    "next_attempt_at, last_status, last_error, created_at, delivered_at, body "
                    "FROM {} WHERE id = %s"
                ).format(self.deliveries),
                (identity,),
            ).fetchone()
        assert delivery is not None
        return delivery


def _webhook(row: dict[str, Any]) -> Webhook:
    return Webhook(
        name=row["name"],
        url=row["url"],
        events=list(row["events"]),
        after_position=int(row["after_position"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )
