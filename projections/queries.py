"""Reads over the projections and the log, for the API, the bus and the CLI: every query the
service runs outside the views' own writes lives here."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.persistence import StoredEvent
from psycopg import Connection, sql
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool

from domain.guards import breaker_state
from projections.base import LOG_NAME

EVENTS_TABLE = "stateowner_events"
BUS_TRACKING_TABLE = "stateowner_tracking"
TRACES_TRACKING_TABLE = "traces_tracking"
WEBHOOKS_TRACKING_TABLE = "webhooks_tracking"


class BadCursor(ValueError):
    """A list cursor that this service did not hand out."""


CURSOR_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    """`MICROSECONDS.ITEMHEX`: the last row's place in (created_at, item_id) order. Any text of
    that shape is a place in that order, so the API's schema can say exactly what it takes."""
    micros = (created_at - CURSOR_EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{item_id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        micros, _, item = cursor.partition(".")
        if not micros.isdigit() or len(micros) > 17:
            raise ValueError(cursor)
        return CURSOR_EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=item)
    except (ValueError, TypeError, OverflowError) as error:
        raise BadCursor("the cursor is not one this service handed out") from error


@dataclass(frozen=True)
class BudgetStatus:
    """A budget with its scope's spend in one window, and so its breaker's state."""

    scope: str
    alert_usd: Decimal
    halt_usd: Decimal
    spent_usd: Decimal
    window: str
    reset_this_window: bool
    alerted_this_window: bool
    opened_this_window: bool
    alerts: int
    halts: int

    @property
    def state(self) -> str:
        """ok, alerting or halted (see `domain.guards.breaker_state`)."""
        return breaker_state(
            self.spent_usd,
            self.alert_usd,
            self.halt_usd,
            reset_this_window=self.reset_this_window,
        )

    @property
    def halted(self) -> bool:
        return self.state == "halted"

    @property
    def crossing_recorded(self) -> bool:
        """Whether the log already holds every crossing its state calls for in this window."""
        state = self.state
        if state == "ok":
            return True
        return self.alerted_this_window and (state == "alerting" or self.opened_this_window)


def _is(day: date | None, window: str) -> bool:
    return day is not None and day.isoformat() == window


@dataclass(frozen=True)
class LeaseCount:
    """Leases out now, counted on the connection that holds the containment locks."""

    conn: Connection[DictRow]

    def by_agent(self, agent: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) AS n FROM item_status WHERE status = 'claimed' AND agent = %s",
            (agent,),
        ).fetchone()
        return int(row["n"]) if row else 0

    def by_pipeline(self, stage: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT pipeline, count(*) AS n FROM item_status WHERE status = 'claimed' "
            "AND stage = %s GROUP BY pipeline",
            (stage,),
        ).fetchall()
        return {row["pipeline"]: int(row["n"]) for row in rows}


@dataclass(frozen=True)
class Queries:
    """The read side, over a pool of autocommit connections."""

    pool: ConnectionPool[Connection[DictRow]]

    def _one(self, query: sql.Composed | str, params: Any = None) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            return conn.execute(query, params).fetchone()

    def _all(self, query: sql.Composed | str, params: Any = None) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def ping(self, timeout: float) -> None:
        with self.pool.connection(timeout=timeout) as conn:
            conn.execute("SELECT 1")

    # -- items --------------------------------------------------------------------------------

    def item(self, item_id: uuid.UUID) -> dict[str, Any] | None:
        return self._one("SELECT * FROM item_status WHERE item_id = %s", (item_id,))

    def items(
        self,
        *,
        pipeline: str | None = None,
        topic: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Oldest (or newest) first, keyset-paged on (created_at, item_id) so pages stay stable
        as items arrive."""
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        for column, value in (
            ("pipeline", pipeline),
            ("topic", topic),
            ("stage", stage),
            ("status", status),
            ("agent", agent),
        ):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if cursor is not None:
            created_at, item_id = decode_cursor(cursor)
            comparison = "<" if newest_first else ">"
            conditions.append(sql.SQL(f"(created_at, item_id) {comparison} (%s, %s)"))
            params.extend([created_at, item_id])
        where = (
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        )
        order = sql.SQL("created_at DESC, item_id DESC" if newest_first else "created_at, item_id")
        rows = self._all(
            sql.SQL("SELECT * FROM item_status{} ORDER BY {} LIMIT %s").format(where, order),
            [*params, limit + 1],
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["item_id"])
        return rows, next_cursor

    @contextmanager
    def ready_candidates(
        self,
        stage: str,
        now: datetime,
        behind: dict[uuid.UUID, int],
        halted_topics: frozenset[str],
        limit: int,
        full_pipelines: frozenset[str] = frozenset(),
        held: LeaseCount | None = None,
    ) -> Iterator[Iterator[uuid.UUID]]:
        """The oldest ready rows at a stage, one at a time, each locked in one transaction:
        rows another claimer holds are skipped (so simultaneous claimers each lock a different
        item), as are rows known to be behind their item (`behind` maps items to a version they
        have reached) and items of topics whose breaker is open (or of pipelines whose stage is
        at its cap). Under containment's locks, on their connection (`held`)."""
        connection = nullcontext(held.conn) if held is not None else self.pool.connection()
        with connection as conn, conn.transaction():

            def candidates() -> Iterator[uuid.UUID]:
                passed_over: list[uuid.UUID] = []
                for _ in range(limit):
                    row = conn.execute(
                        "SELECT item_id FROM item_status WHERE stage = %s AND status = 'ready' "
                        "AND (not_before IS NULL OR not_before <= %s) AND item_id <> ALL(%s) "
                        "AND topic <> ALL(%s) AND pipeline <> ALL(%s) AND NOT EXISTS (SELECT 1 FROM "
                        "unnest(%s::uuid[], %s::int[]) AS b(id, version) "
                        "WHERE b.id = item_status.item_id AND b.version > item_status.version) "
                        "ORDER BY ready_at, position LIMIT 1 FOR UPDATE SKIP LOCKED",
                        (
                            stage,
                            now,
                            passed_over,
                            list(halted_topics),
                            list(full_pipelines),
                            list(behind),
                            list(behind.values()),
                        ),
                    ).fetchone()
                    if row is None:
                        return
                    passed_over.append(row["item_id"])
                    yield row["item_id"]

            yield candidates()

    def any_ready(self, stage: str, now: datetime) -> bool:
        """Whether any row is ready, held by another claimer or not."""
        row = self._one(
            "SELECT EXISTS (SELECT 1 FROM item_status WHERE stage = %s AND status = 'ready' "
            "AND (not_before IS NULL OR not_before <= %s)) AS found",
            (stage, now),
        )
        return bool(row and row["found"])

    def next_not_before(self, stage: str, now: datetime) -> datetime | None:
        row = self._one(
            "SELECT min(not_before) AS at FROM item_status WHERE stage = %s AND status = 'ready' "
            "AND not_before > %s",
            (stage, now),
        )
        return row["at"] if row else None

    def leases_out_of_scope(self, limit: int) -> list[tuple[uuid.UUID, str]]:
        """Leases (item, lease id) whose holder is disabled, unknown or no longer scoped to the
        lease's stage, as the agents view shows it."""
        rows = self._all(
            "SELECT s.item_id, s.lease_id FROM item_status s "
            "LEFT JOIN agents a ON a.name = s.agent WHERE s.status = 'claimed' "
            "AND (a.name IS NULL OR a.disabled OR a.role <> 'agent' OR NOT (a.stages ? s.stage)) "
            "ORDER BY s.lease_expires_at LIMIT %s",
            (limit,),
        )
        return [(row["item_id"], row["lease_id"]) for row in rows]

    def expired_leases(self, now: datetime, limit: int) -> list[uuid.UUID]:
        rows = self._all(
            "SELECT item_id FROM item_status WHERE status = 'claimed' AND lease_expires_at <= %s "
            "ORDER BY lease_expires_at LIMIT %s",
            (now, limit),
        )
        return [row["item_id"] for row in rows]

    # -- topics and agents ----------------------------------------------------------------------

    def topics(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each topic (or the one named) with the inventory of its items."""
        with self.pool.connection() as conn:
            if name is None:
                rows = conn.execute("SELECT * FROM topics ORDER BY name").fetchall()
            else:
                rows = conn.execute("SELECT * FROM topics WHERE name = %s", (name,)).fetchall()
            inventory = _topic_inventory(conn, [row["name"] for row in rows])
        return [{**row, "items": inventory[row["name"]]} for row in rows]

    def agents(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM agents ORDER BY name")

    # -- eval runs ----------------------------------------------------------------------------

    def eval_runs(
        self, pipeline: str, version: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """A pipeline's eval runs (of one version), newest first, each with its cases."""
        with self.pool.connection() as conn:
            runs = conn.execute(
                "SELECT * FROM eval_runs WHERE pipeline = %(pipeline)s AND "
                "(%(version)s::int IS NULL OR version = %(version)s::int) "
                "ORDER BY position DESC LIMIT %(limit)s",
                {"pipeline": pipeline, "version": version, "limit": limit},
            ).fetchall()
            return _with_cases(conn, runs)

    def eval_run(self, run_id: uuid.UUID) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            runs = conn.execute("SELECT * FROM eval_runs WHERE run_id = %s", (run_id,)).fetchall()
            found = _with_cases(conn, runs)
        return found[0] if found else None

    # -- budgets --------------------------------------------------------------------------------

    def budgets(self, window: str, scopes: Sequence[str] | None = None) -> list[BudgetStatus]:
        """Each budget (or those of `scopes`) with what its scope spent in the window."""
        where = sql.SQL("WHERE b.scope = ANY(%(scopes)s)") if scopes is not None else sql.SQL("")
        rows = self._all(
            sql.SQL(
                "SELECT b.*, COALESCE(s.spent_usd, 0) AS spent_usd FROM budgets b "
                "LEFT JOIN spend s ON s.scope = b.scope AND s.window_day = %(window)s::date "
                "{} ORDER BY b.scope"
            ).format(where),
            {"window": window, "scopes": list(scopes) if scopes is not None else None},
        )
        return [
            BudgetStatus(
                scope=row["scope"],
                alert_usd=row["alert_usd"],
                halt_usd=row["halt_usd"],
                spent_usd=row["spent_usd"],
                window=window,
                reset_this_window=_is(row["reset_window"], window),
                alerted_this_window=_is(row["alerted_window"], window),
                opened_this_window=_is(row["opened_window"], window),
                alerts=row["alerts"],
                halts=row["halts"],
            )
            for row in rows
        ]

    def spent(self, window: str, scopes: Sequence[str]) -> dict[str, Decimal]:
        rows = self._all(
            "SELECT scope, spent_usd FROM spend WHERE window_day = %s::date AND scope = ANY(%s)",
            (window, list(scopes)),
        )
        return {row["scope"]: row["spent_usd"] for row in rows}

    # -- audit ----------------------------------------------------------------------------------

    def audit(
        self,
        *,
        after: int,
        limit: int,
        actor: str | None = None,
        type: str | None = None,
        item: uuid.UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events by actor, type, item and time, oldest first after a position, or newest first
        before one."""
        conditions: list[sql.Composable] = [sql.SQL("position > %s")]
        params: list[Any] = [after]
        if before is not None:
            conditions.append(sql.SQL("position < %s"))
            params.append(before)
        for column, value in (("actor", actor), ("type", type), ("item_id", item)):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if since is not None:
            conditions.append(sql.SQL("at >= %s"))
            params.append(since)
        if until is not None:
            conditions.append(sql.SQL("at < %s"))
            params.append(until)
        order = sql.SQL("position DESC" if before is not None else "position")
        return self._all(
            sql.SQL("SELECT * FROM audit WHERE {} ORDER BY {} LIMIT %s").format(
                sql.SQL(" AND ").join(conditions), order
            ),
            [*params, limit],
        )

    # -- schedules --------------------------------------------------------------------------------

    def active_schedules(self) -> list[str]:
        rows = self._all("SELECT name FROM schedules WHERE enabled AND NOT deleted ORDER BY name")
        return [row["name"] for row in rows]

    def schedules(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every schedule not deleted (or the one named), by name."""
        return self._all(
            "SELECT * FROM schedules WHERE NOT deleted AND (%(name)s::text IS NULL "
            "OR name = %(name)s) ORDER BY name",
            {"name": name},
        )

    # -- containment ------------------------------------------------------------------------------

    def stage_caps(self) -> dict[str, dict[str, int]]:
        """stage -> pipeline -> the most leases that stage of that pipeline may have out."""
        caps: dict[str, dict[str, int]] = {}
        for row in self._all("SELECT pipeline, stage, max_concurrent FROM stage_limits"):
            caps.setdefault(row["stage"], {})[row["pipeline"]] = row["max_concurrent"]
        return caps

    @contextmanager
    def leases_counted(
        self, locks: Sequence[str], settle_seconds: float
    ) -> Iterator[LeaseCount | None]:
        """Hold the named locks (advisory, this transaction's) while the caller counts leases and
        claims: every claim under a cap is made under its lock, and counted only once item_status
        has caught up with the log as it stood once the lock was held — so no rival's claim goes
        uncounted. Yields None when item_status does not catch up within `settle_seconds`."""
        with self.pool.connection() as conn, conn.transaction():
            for name in sorted(locks):
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))
            head = _log_head(conn)
            deadline = time.monotonic() + settle_seconds
            while _view_position(conn, "item_status") < head:
                if time.monotonic() >= deadline:
                    yield None
                    return
                time.sleep(0.002)
            yield LeaseCount(conn)

    # -- pipeline reports ---------------------------------------------------------------------

    def pipeline_report(self, pipeline: str, since: datetime) -> dict[str, Any]:
        """Production items of a pipeline created since `since` (eval items left out): counts by
        outcome, cost, end-to-end times of those done, each stage's waiting and working times,
        and incidents (parkings, halts, expired leases)."""
        with self.pool.connection() as conn:
            totals = conn.execute(
                "SELECT count(*) AS items, count(*) FILTER (WHERE status = 'done') AS done, "
                "count(*) FILTER (WHERE status = 'parked') AS parked, "
                "count(*) FILTER (WHERE status = 'halted') AS halted, "
                "count(*) FILTER (WHERE status = 'cancelled') AS cancelled, "
                "COALESCE(sum(cost_usd), 0) AS cost_usd, "
                "COALESCE(sum(parked), 0) AS parkings, COALESCE(sum(halted), 0) AS halts, "
                "COALESCE(sum(expired), 0) AS expiries, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - "
                "created_at)) FILTER (WHERE status = 'done') AS p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - "
                "created_at)) FILTER (WHERE status = 'done') AS p95 "
                "FROM report_items WHERE pipeline = %s AND NOT eval AND created_at >= %s",
                (pipeline, since),
            ).fetchone()
            stages = conn.execute(
                "SELECT s.stage, count(*) AS visits, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "greatest(s.claimed_at - s.ready_at, interval '0')))  AS wait_p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "greatest(s.claimed_at - s.ready_at, interval '0'))) AS wait_p95, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "s.ended_at - s.claimed_at)) AS work_p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "s.ended_at - s.claimed_at)) AS work_p95 "
                "FROM report_stages s JOIN report_items i ON i.item_id = s.item_id "
                "WHERE i.pipeline = %s AND NOT i.eval AND i.created_at >= %s "
                "AND s.claimed_at IS NOT NULL GROUP BY s.stage ORDER BY s.stage",
                (pipeline, since),
            ).fetchall()
        assert totals is not None
        return {**totals, "stages": stages}

    # -- the console's overview ---------------------------------------------------------------

    def item_counts(self) -> list[dict[str, Any]]:
        """How many items stand at each pipeline, stage and status."""
        return self._all(
            "SELECT pipeline, stage, status, count(*) AS n FROM item_status "
            "GROUP BY pipeline, stage, status ORDER BY pipeline, stage, status"
        )

    def items_in(self, status: str, limit: int) -> list[dict[str, Any]]:
        """Items in a status, those that have been in it longest first."""
        return self._all(
            "SELECT * FROM item_status WHERE status = %s ORDER BY updated_at, item_id LIMIT %s",
            (status, limit),
        )

    def leases_ending(self, before: datetime, limit: int) -> list[dict[str, Any]]:
        """Claimed items whose lease ends before `before` (or has ended), soonest first."""
        return self._all(
            "SELECT * FROM item_status WHERE status = 'claimed' AND lease_expires_at < %s "
            "ORDER BY lease_expires_at LIMIT %s",
            (before, limit),
        )

    def waiting_longest(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Ready items no agent has claimed, those ready longest first."""
        return self._all(
            "SELECT * FROM item_status WHERE status = 'ready' "
            "AND (not_before IS NULL OR not_before <= %s) ORDER BY ready_at, position LIMIT %s",
            (now, limit),
        )

    def latest_of_types(self, types: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """The newest audit entries of these event types, with their item's title if any."""
        return self._all(
            "SELECT a.*, i.title FROM audit a LEFT JOIN item_status i ON i.item_id = a.item_id "
            "WHERE a.type = ANY(%s) ORDER BY a.position DESC LIMIT %s",
            (list(types), limit),
        )

    def aggregate_ids(self, aggregate: str) -> list[uuid.UUID]:
        """Every aggregate of a kind (Pipeline, Agent, …) the log holds."""
        rows = self._all(
            "SELECT DISTINCT aggregate_id FROM audit WHERE aggregate = %s AND version = 1",
            (aggregate,),
        )
        return [row["aggregate_id"] for row in rows]

    def item_titles(self, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        rows = self._all(
            "SELECT item_id, title FROM item_status WHERE item_id = ANY(%s)", (list(item_ids),)
        )
        return {row["item_id"]: row["title"] for row in rows}

    # -- the log and the followers' positions -----------------------------------------------------

    def stored_events(
        self,
        aggregate_id: uuid.UUID,
        *,
        after_version: int = 0,
        limit: int | None = None,
        topics: Sequence[str] | None = None,
    ) -> list[tuple[StoredEvent, int]]:
        """An aggregate's events as stored, in order, each with its position in the log: those
        after a version, of the given topics, at most `limit` of them."""
        rows = self._all(
            sql.SQL(
                "SELECT originator_id, originator_version, topic, state, notification_id "
                "FROM {} WHERE originator_id = %s AND originator_version > %s "
                "AND (%s::text[] IS NULL OR topic = ANY(%s::text[])) "
                "ORDER BY originator_version LIMIT %s"
            ).format(sql.Identifier(EVENTS_TABLE)),
            (aggregate_id, after_version, topics, topics, limit),
        )
        return [
            (
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                ),
                int(row["notification_id"]),
            )
            for row in rows
        ]

    def event_position(self, aggregate_id: uuid.UUID, version: int) -> int:
        row = self._one(
            sql.SQL(
                "SELECT notification_id FROM {} WHERE originator_id = %s "
                "AND originator_version = %s"
            ).format(sql.Identifier(EVENTS_TABLE)),
            (aggregate_id, version),
        )
        return int(row["notification_id"]) if row else 0

    def positions(self, views: Sequence[str]) -> tuple[dict[str, int], int]:
        """Each view's position and the bus's, then the log head, read last, so a follower is
        never reported caught up with a head it has not seen."""
        with self.pool.connection() as conn:
            positions = {name: _view_position(conn, name) for name in views}
            positions["bus"] = _tracked(conn, BUS_TRACKING_TABLE)
            # The trace exporter's table exists once a process has exported; any process shows it.
            if _exists(conn, TRACES_TRACKING_TABLE):
                positions["traces"] = _tracked(conn, TRACES_TRACKING_TABLE)
            if _exists(conn, WEBHOOKS_TRACKING_TABLE):
                positions["webhooks"] = _tracked(conn, WEBHOOKS_TRACKING_TABLE)
            return positions, _log_head(conn)

    def view_position(self, view: str) -> int:
        with self.pool.connection() as conn:
            return _view_position(conn, view)

    def log_head(self) -> int:
        with self.pool.connection() as conn:
            return _log_head(conn)


def _with_cases(conn: Connection[DictRow], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cases: dict[uuid.UUID, list[dict[str, Any]]] = {run["run_id"]: [] for run in runs}
    if runs:
        for row in conn.execute(
            "SELECT * FROM eval_cases WHERE run_id = ANY(%s) ORDER BY run_id, ordinal",
            (list(cases),),
        ):
            cases[row["run_id"]].append(row)
    return [{**run, "case_rows": cases[run["run_id"]]} for run in runs]


def _topic_inventory(conn: Connection[DictRow], names: Sequence[str]) -> dict[str, dict[str, Any]]:
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


def _tracked(conn: Connection[DictRow], table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
            sql.Identifier(table)
        ),
        (LOG_NAME,),
    ).fetchone()
    return int(row["notification_id"]) if row else 0


def _exists(conn: Connection[DictRow], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS found", (table,)).fetchone()
    return bool(row and row["found"])


def _view_position(conn: Connection[DictRow], view: str) -> int:
    return _tracked(conn, f"{view}_tracking")


def _log_head(conn: Connection[DictRow]) -> int:
    row = conn.execute(
        sql.SQL("SELECT max(notification_id) AS head FROM {}").format(sql.Identifier(EVENTS_TABLE))
    ).fetchone()
    return int(row["head"] or 0) if row else 0
