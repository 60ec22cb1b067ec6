"""A view is a set of tables plus a tracking position, written together in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import psycopg
import structlog
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Cursor, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from domain.application import StateOwner
from projections.poison import DeadLetters, Poison

LOG_NAME = StateOwner.name
log = structlog.get_logger(__name__)
EventHandler = Callable[[Any, Any, int, "Cursor[DictRow]"], None]
Handled = TypeVar("Handled", bound=EventHandler)


# A report's cost and tokens, added to a row's running totals.
ADD_SPEND = (
    "cost_usd = cost_usd + %(cost)s, tokens_in = tokens_in + %(tokens_in)s, "
    "tokens_out = tokens_out + %(tokens_out)s"
)
NO_LEASE = "agent = NULL, lease_id = NULL, lease_expires_at = NULL"
NO_LEASE_ROW = {"agent": None, "lease_id": None, "lease_expires_at": None}


def spend_of(event: Any) -> dict[str, Any]:
    """The parameters ADD_SPEND takes, from a StageCompleted or StageFailed."""
    return {"cost": event.cost_usd, "tokens_in": event.tokens_in, "tokens_out": event.tokens_out}


def add_spend(row: dict[str, Any], event: Any) -> None:
    """ADD_SPEND, to a row folded in memory."""
    row["cost_usd"] += event.cost_usd
    row["tokens_in"] += event.tokens_in
    row["tokens_out"] += event.tokens_out


class PositionMoved(Exception):
    """Another writer (a second runner, a rebuild) moved the view's position: re-read and go on."""


def handles(*event_classes: type) -> Callable[[Handled], Handled]:
    """Mark a view's method as the one that applies events of these classes (or subclasses)."""

    def mark(method: Handled) -> Handled:
        method.__dict__.setdefault("handles", []).extend(event_classes)
        return method

    return mark


class View(PostgresTrackingRecorder):
    """A materialised view of the log in the eventsourcing TrackingRecorder pattern."""

    name: ClassVar[str]
    # table name -> its primary key columns; the order is the order tables are created in.
    tables: ClassVar[dict[str, tuple[str, ...]]]
    _handlers: ClassVar[dict[type, str]]
    _dispatch: ClassVar[dict[type, str | None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = {}
        cls._dispatch = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                for event_class in getattr(value, "handles", ()):
                    cls._handlers[event_class] = attribute

    @classmethod
    def handler_name(cls, event_class: type) -> str | None:
        """The method that applies events of this class: the one marked for it or for the
        nearest of its bases."""
        if event_class not in cls._dispatch:
            cls._dispatch[event_class] = next(
                (cls._handlers[k] for k in event_class.__mro__ if k in cls._handlers), None
            )
        return cls._dispatch[event_class]

    def __init__(self, datastore: PostgresDatastore, *, live: bool = True) -> None:
        super().__init__(datastore, tracking_table_name=f"{self.name}_tracking")
        self.live = live
        self._composed: dict[str, sql.Composed] = {}
        self.sql_create_statements = [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.datastore.schema)),
            *self.sql_create_statements,
            *self.table_statements(),
        ]

    # -- identifiers --------------------------------------------------------------------------

    def composed(self, key: str, build: Callable[[], sql.Composed]) -> sql.Composed:
        """A statement built once per view: composing SQL costs more than running it in a batch."""
        statement = self._composed.get(key)
        if statement is None:
            statement = self._composed[key] = build()
        return statement

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.datastore.schema), sql.Identifier(name))

    @property
    def tracking_table(self) -> sql.Composed:
        return self.table(self.tracking_table_name)

    def table_statements(self) -> Sequence[sql.Composed]:
        raise NotImplementedError

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (application_name, notification_id) VALUES (%s, 0) "
                    "ON CONFLICT DO NOTHING"
                ).format(self.tracking_table),
                (LOG_NAME,),
            )

    def drop_tables(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for name in [*reversed(list(self.tables)), self.tracking_table_name]:
                curs.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table(name)))

    # -- position ------------------------------------------------------------------------------

    def position(self) -> int:
        return self.max_tracking_id(LOG_NAME) or 0

    def position_in(self, conn: Any) -> int:
        row = conn.execute(
            sql.SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                self.tracking_table
            ),
            (LOG_NAME,),
        ).fetchone()
        return int(row["notification_id"]) if row else 0

    def _locked_position(self, curs: Cursor[DictRow]) -> int:
        row = curs.execute(
            sql.SQL("SELECT {} AS position").format(self.locked_position_expression())
        ).fetchone()
        return int(row["position"] or 0) if row else 0

    # -- processing ----------------------------------------------------------------------------

    def locked_position_expression(self) -> sql.Composed:
        """An expression that reads the position and locks it until the transaction ends."""
        return self.position_expression(locked=True)

    def position_expression(self, locked: bool = False) -> sql.Composed:
        """An expression that reads the position, to read within a larger statement."""
        return sql.SQL("(SELECT notification_id FROM {} WHERE application_name = {}{})").format(
            self.tracking_table, sql.Literal(LOG_NAME), sql.SQL(" FOR UPDATE" if locked else "")
        )

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        """Apply events that follow position `after`, and move the position, atomically."""
        if not batch:
            return
        with self.datastore.transaction(commit=True) as curs:
            if self._locked_position(curs) != after:
                raise PositionMoved(self.name)
            with curs.connection.pipeline():
                self.apply(curs, batch)

    def apply(self, curs: Cursor[DictRow], batch: Sequence[tuple[Any, int]]) -> None:
        """Apply the events and record the last position, inside the caller's transaction (in
        pipeline mode, the caller's: the statements go without waiting for each answer)."""
        for domain_event, position in batch:
            self.apply_one(domain_event, position, curs)
        self.set_position(curs, batch[-1][1])

    def apply_one(self, domain_event: Any, position: int, curs: Cursor[DictRow]) -> None:
        handler_name = self.handler_name(type(domain_event))
        if handler_name is not None:
            getattr(self, handler_name)(domain_event, position, curs)
        else:
            self.apply_event(domain_event, position, curs)

    def apply_salvaging(
        self,
        curs: Cursor[DictRow],
        batch: Sequence[tuple[Any, int]],
        tolerate: Collection[int] = (),
    ) -> Poison | None:
        """Apply the events one at a time, each in a savepoint, up to the first that fails (its
        position tolerated: passed over); record the position reached, and return the poison."""
        reached = None
        poison = None
        for domain_event, position in batch:
            try:
                with curs.connection.transaction():
                    self.apply_one(domain_event, position, curs)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise  # the database, not the event: the follower retries
            except Exception as error:
                if curs.connection.broken:
                    raise
                if position not in tolerate:
                    poison = Poison(position, type(domain_event).__name__, _describe(error))
                    break
            reached = position
        if reached is not None:
            self._insert_tracking(curs, Tracking(LOG_NAME, reached))
        return poison

    def apply_event(self, domain_event: Any, position: int, curs: Cursor[DictRow]) -> None:
        """Events without a handler of their own; most views ignore them."""

    def set_position(self, curs: Cursor[DictRow], position: int) -> None:
        curs.execute(
            sql.SQL("UPDATE {} SET notification_id = %s WHERE application_name = %s").format(
                self.tracking_table
            ),
            (position, LOG_NAME),
        )


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".strip()


NOTHING_TO_DO = 2**62


class PoisonEvent(Exception):
    """A view cannot apply an event, and nothing says to pass over it."""

    def __init__(self, view: str, poison: Poison) -> None:
        super().__init__(
            f"{view} cannot apply {poison.event_type} at position {poison.position}: {poison.error}"
        )
        self.view = view
        self.poison = poison


class ViewGroup:
    """Several views on one datastore, fed by one follower: one read of the log and one
    transaction per batch for all of them, each view keeping its own tracking position.

    An event one view cannot apply stops that view there — recorded as a dead letter when the
    group is live, else an error unless it is a position to tolerate — and the others go on."""

    name = "projections"

    def __init__(
        self,
        views: Sequence[View],
        dead_letters: DeadLetters | None = None,
        tolerate: dict[str, set[int]] | None = None,
    ) -> None:
        self.views = list(views)
        self.datastore = self.views[0].datastore
        self.dead_letters = dead_letters
        self.tolerate = tolerate or {}
        self._statements: dict[bool, sql.Composed] = {}

    def position(self) -> int:
        """Where the running views stand (the least of them); with every view stopped, past any
        position, so the follower waits instead of reading what no view would apply."""
        with self.datastore.transaction(commit=False) as curs:
            positions = [position for _, position in self._positions(curs, locked=False)]
        return min(positions, default=NOTHING_TO_DO)

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        if not batch:
            return
        try:
            self._apply_together(batch, after)
        except PositionMoved:
            raise
        except Exception:
            self._apply_apart(batch, after)  # one view's event, at least, cannot be applied

    def _locked(self, curs: Cursor[DictRow], after: int) -> list[tuple[View, int]]:
        """The running views and their positions, each locked; read in one round trip."""
        locked = self._positions(curs, locked=True)
        if locked and min(position for _, position in locked) != after:
            raise PositionMoved(self.name)
        return locked

    def _positions(self, curs: Cursor[DictRow], *, locked: bool) -> list[tuple[View, int]]:
        """The running views and their positions (locked, or only read), in one round trip:
        a follower asks whenever it goes idle, and a round trip per view adds up."""
        if locked not in self._statements:
            stopped = (
                self.dead_letters.stopped_expression()
                if self.dead_letters is not None
                else sql.SQL("NULL::text[]")
            )
            positions = [
                sql.SQL("{} AS {}").format(v.position_expression(locked), sql.Identifier(v.name))
                for v in self.views
            ]
            self._statements[locked] = sql.SQL("SELECT {} AS stopped, {}").format(
                stopped, sql.SQL(", ").join(positions)
            )
        row = curs.execute(self._statements[locked]).fetchone()
        assert row is not None
        stopped_views = set(row["stopped"] or ())
        return [
            (view, int(row[view.name] or 0))
            for view in self.views
            if view.name not in stopped_views
        ]

    def _apply_together(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        with self.datastore.transaction(commit=True) as curs:
            locked = self._locked(curs, after)
            with curs.connection.pipeline():
                for view, reached in locked:
                    unseen = [entry for entry in batch if entry[1] > reached]
                    if unseen:
                        view.apply(curs, unseen)

    def _apply_apart(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for view, reached in self._locked(curs, after):
                unseen = [entry for entry in batch if entry[1] > reached]
                if not unseen:
                    continue
                poison = view.apply_salvaging(curs, unseen, self.tolerate.get(view.name, ()))
                if poison is None:
                    continue
                if self.dead_letters is None:
                    raise PoisonEvent(view.name, poison)
                self.dead_letters.record(curs, view.name, poison)
                log.error(
                    "projection_stopped",
                    view=view.name,
                    position=poison.position,
                    event_type=poison.event_type,
                    error=poison.error,
                )


Row = dict[str, Any]


class FoldConflict(Exception):
    """The fold met an event its view's SQL would refuse (a key taken, a NOT NULL left empty):
    the bulk rebuild leaves that view to the event-by-event path, which decides as live does."""


class Fold:
    """A view's tables folded in memory from the log, for a bulk rebuild. Its methods bear the
    names of the view's handlers, picked by the view's own dispatch, and do to rows in memory
    what those do in SQL — an UPDATE of no row changes nothing, an INSERT of a taken key is a
    FoldConflict. Tests hold both to the same rows on the same log."""

    view: ClassVar[type[View]]
    # Rows are keyed by their primary key; a UUID by its .int, which hashes in C.
    # Columns kept as Python objects and written as jsonb.
    jsonb: ClassVar[frozenset[str]] = frozenset()
    # Tables whose rows are final as they are made: rows() hands over those made since the last
    # call, and the bulk rebuild writes them while it still reads the log.
    streamed: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, Row]] = {table: {} for table in self.view.tables}

    def method_for(self, event_class: type) -> Callable[[Any, int], None] | None:
        """What applies events of this class; None when the view ignores them."""
        name = self.view.handler_name(event_class)
        if name is not None:
            method: Callable[[Any, int], None] = getattr(self, name)
            return method
        if type(self).apply_event is Fold.apply_event:
            return None
        return self.apply_event

    def apply(self, event: Any, position: int) -> None:
        method = self.method_for(type(event))
        if method is not None:
            method(event, position)

    def apply_event(self, event: Any, position: int) -> None:
        """Events without a handler of their own; most views ignore them."""

    def rows(self, table: str) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
        """The table's columns and its rows, as COPY takes them."""
        rows = self.tables[table]
        if not rows:
            return (), ()
        columns = list(next(iter(rows.values())))
        jsonb = [n for n, column in enumerate(columns) if column in self.jsonb]

        def values(row: Row) -> list[Any]:
            found = list(row.values())
            for n in jsonb:
                found[n] = self.to_jsonb(found[n])
            return found

        return columns, (values(row) if jsonb else tuple(row.values()) for row in rows.values())

    def to_jsonb(self, value: Any) -> Jsonb:
        """A jsonb column's value as the view's handlers pass it."""
        return Jsonb(value)

    def update(self, table: str, key: Any, **values: Any) -> Row | None:
        """SQL's UPDATE of one row by its key: of no row, it changes nothing (None)."""
        row = self.tables[table].get(key)
        if row is not None:
            row.update(values)
        return row

    def insert(self, table: str, key: Any, row: Row) -> Row:
        rows = self.tables[table]
        if key in rows:
            raise FoldConflict(f"{table}: the key {key!r} is taken")
        rows[key] = row
        return row


def joined(prefix: str, value: Any) -> str:
    """SQL's `prefix || value`, which is NULL (refused by a NOT NULL column) for a NULL value."""
    if value is None:
        raise FoldConflict(f"{prefix} of nothing")
    return f"{prefix}{value}"
