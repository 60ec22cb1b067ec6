"""The bulk rebuild: one read of the log feeds every view's fold in memory; each view's tables are
written with COPY into fresh shadow tables, and swapped in with the view's position in one
transaction, so readers see the old tables or the new ones, never half of either.

Decoding is most of the cost of reading the log, and most of that is the library's JSON decoder
calling back into Python for every object; here the stored JSON is parsed by orjson and only the
event's own fields are transcoded. Whatever that cannot do exactly as the library's mapper would
(an unknown value type, a typed value nested inside another, JSON orjson refuses) is left to the
mapper, event by event, so the events are the ones the event-by-event path sees."""

from __future__ import annotations

import decimal
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Full, Queue
from typing import Any, cast
from uuid import UUID

import orjson
import psycopg
import structlog
from eventsourcing import persistence
from eventsourcing.persistence import (
    ApplicationRecorder,
    JSONTranscoder,
    Mapper,
    Notification,
    find_id_convertor,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import resolve_topic
from psycopg import sql
from psycopg.rows import tuple_row

from projections.base import Fold, View
from projections.follower import decode
from projections.poison import DeadLetters

log = structlog.get_logger(__name__)

PROGRESS_EVERY = 5000
READ_BATCH = 5000
# Batches of streamed rows queued for their writer at most: the fold waits beyond that.
STREAM_DEPTH = 4
TYPED = b'"_type_"'
ESCAPE = b"\\u"
# Sums exactly as PostgreSQL's numeric does, with no rounding at 28 digits.
EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)

Progress = Callable[[int], None]
COLUMN_TYPES = (
    "SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
)
SECONDARY_INDEXES = (
    "SELECT i.indexname AS name, i.indexdef AS definition FROM pg_indexes i "
    "WHERE i.schemaname = %s AND i.tablename = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
    "WHERE c.conname = i.indexname AND c.connamespace = i.schemaname::regnamespace)"
)
# What a table refuses (a value it cannot hold, a key taken, a NULL in a NOT NULL column),
# raised by psycopg or, through the library's datastore, as the library's own.
REFUSED = (
    psycopg.DataError,
    psycopg.IntegrityError,
    persistence.DataError,
    persistence.IntegrityError,
)


class Decoder:
    """Stored events to domain events, identical to the mapper's, faster where it can be."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        plain = not mapper.cipher and not mapper.compressor
        self.names = transcoder.names if isinstance(transcoder, JSONTranscoder) and plain else None
        self._topics: dict[str, _Topic] = {}

    def __call__(
        self, position: int, originator_id: UUID, version: int, topic: str, state: bytes
    ) -> Any:
        if self.names is not None:
            try:
                return self._fast(originator_id, version, topic, state)
            except Exception:  # noqa: S110 - the mapper decides, and names any real fault
                pass
        stored = Notification(
            id=position,
            originator_id=originator_id,
            originator_version=version,
            topic=topic,
            state=state,
        )
        return decode(self.mapper, stored, position)

    def _fast(self, originator_id: UUID, version: int, topic: str, state: bytes) -> Any:
        assert self.names is not None
        fields = orjson.loads(state)
        if type(fields) is not dict:
            raise TypeError("not an object")
        known = self._topics.get(topic)
        if known is None:
            known = self._topics[topic] = _Topic(resolve_topic(topic), type(originator_id))
        if ESCAPE in state:  # an escaped "_type_" would hide from the count below
            raise ValueError("escapes: the mapper decides")
        typed = state.count(TYPED)
        if typed:
            # The fields typed last time first: usually all there are, and the count says so.
            for key in known.typed:
                value = fields.get(key)
                if type(value) is dict and len(value) == 2 and "_type_" in value:
                    fields[key] = self.names[value["_type_"]].decode(value["_data_"])
                    typed -= 1
            if typed:
                for key, value in fields.items():
                    if type(value) is dict and len(value) == 2 and "_type_" in value:
                        fields[key] = self.names[value["_type_"]].decode(value["_data_"])
                        known.typed = (*known.typed, key)
                        typed -= 1
            if typed:
                raise ValueError("a typed value nested deeper: the mapper's object hook decodes it")
        fields["originator_id"] = known.convert(originator_id)
        fields["originator_version"] = version
        from_version = fields.pop("class_version", 1)
        while from_version < known.class_version:
            getattr(known.cls, f"upcast_v{from_version}_v{from_version + 1}")(fields)
            from_version += 1
        event: Any = object.__new__(known.cls)
        object.__setattr__(event, "__dict__", fields)
        return event


class _Topic:
    """What decoding the events of one topic needs, looked up once."""

    def __init__(self, cls: type, id_type: type) -> None:
        self.cls = cls
        self.convert = find_id_convertor(cls, cast(Hashable, id_type))
        self.class_version: int = getattr(cls, "class_version", 1)
        self.typed: tuple[str, ...] = ()


def read_log(
    recorder: ApplicationRecorder, stop: int | None
) -> Iterator[tuple[int, UUID, int, str, bytes]]:
    """Every stored event up to `stop` (all when None), in log order: one server-side cursor
    over one snapshot of the log, fetched in large binary batches."""
    assert isinstance(recorder, PostgresApplicationRecorder)
    statement = sql.SQL(
        "SELECT notification_id::int8, originator_id::uuid, originator_version::int8, "
        "topic::text, state::bytea FROM {}.{} WHERE notification_id <= %s "
        "ORDER BY notification_id"
    ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    last = stop if stop is not None else 2**63 - 1
    with (
        recorder.datastore.transaction(commit=False) as curs,
        curs.connection.cursor(name="stateowner_log", binary=True, row_factory=tuple_row) as log,
    ):
        log.execute(statement, (last,))
        while rows := log.fetchmany(READ_BATCH):
            yield from rows


@dataclass
class Folded:
    """The folds that took the whole log, the position they reached, and the views whose fold
    met an event it could not apply as SQL would (left to the event-by-event path)."""

    folds: dict[str, Fold]
    position: int
    failed: dict[str, str] = field(default_factory=dict)


def fold_log(
    folds: dict[str, Fold],
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    *,
    stop: int | None = None,
    progress: Progress | None = None,
    every_batch: Callable[[Folded], None] | None = None,
) -> Folded:
    """Read the log once, decode each event once, and hand it to every view's fold (with
    `every_batch` told every PROGRESS_EVERY events, and at the end)."""
    decoded = Decoder(mapper)
    folded = Folded(folds, 0)
    # Per event class, the folds that take it and how: most views ignore most events.
    plans: dict[type, list[tuple[str, Callable[[Any, int], None]]]] = {}
    counted = 0
    with decimal.localcontext(EXACT):
        for position, originator_id, version, topic, state in read_log(recorder, stop):
            event = decoded(position, originator_id, version, topic, state)
            plan = plans.get(type(event))
            if plan is None:
                plan = plans[type(event)] = [
                    (name, method)
                    for name, fold in folds.items()
                    if name not in folded.failed
                    and (method := fold.method_for(type(event))) is not None
                ]
            for name, method in plan:
                try:
                    method(event, position)
                except Exception as error:
                    folded.failed[name] = f"{type(error).__name__}: {error}"
                    plans.clear()
            folded.position = position
            counted += 1
            if counted == PROGRESS_EVERY:
                if progress is not None:
                    progress(counted)
                if every_batch is not None:
                    every_batch(folded)
                counted = 0
    if progress is not None and counted:
        progress(counted)
    if every_batch is not None:
        every_batch(folded)
    for name in folded.failed:
        del folds[name]
    return folded


def prepare(shadow: View) -> dict[str, list[str]]:
    """Fresh, empty shadow tables for the view, without their secondary indexes (they are built
    once the rows are in, cheaper than kept up row by row); returns each table's index
    definitions, to build them with."""
    shadow.drop_tables()
    shadow.create_table()
    indexes: dict[str, list[str]] = {}
    schema = shadow.datastore.schema
    with shadow.datastore.transaction(commit=True) as curs:
        for table in shadow.tables:
            found = curs.execute(SECONDARY_INDEXES, (schema, table)).fetchall()
            indexes[table] = [index["definition"] for index in found]
            for index in found:
                curs.execute(
                    sql.SQL("DROP INDEX {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(index["name"])
                    )
                )
    return indexes


def write(
    shadow: View,
    fold: Fold,
    indexes: dict[str, list[str]],
    streams: dict[str, Queue[Batch]] | None = None,
) -> None:
    """Fill the prepared shadow tables with COPY (binary, typed as the table's columns), build
    their indexes, commit; the live tables are not touched. A streamed table's rows come from
    its queue, batch by batch, while the log is still being read."""
    with shadow.datastore.transaction(commit=True) as curs:
        for table in shadow.tables:
            queue = (streams or {}).get(table)
            columns, rows = fold.rows(table) if queue is None else _streamed(queue)
            if columns:
                name = f"{shadow.datastore.schema}.{table}"
                found = curs.execute(COLUMN_TYPES, (name,)).fetchall()
                types = {column["name"]: column["type"] for column in found}
                statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    shadow.table(table), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                with curs.copy(statement) as copy:
                    copy.set_types([types[column] for column in columns])
                    for row in rows:
                        copy.write_row(row)
            for definition in indexes[table]:
                curs.execute(definition)


# A streamed table's rows made since the last batch (with its columns); None when there are no
# more; an exception when its fold failed (the COPY is abandoned, its transaction rolled back).
Batch = tuple[Sequence[str], Iterable[Sequence[Any]]] | BaseException | None


def _streamed(queue: Queue[Batch]) -> tuple[Sequence[str], Iterable[Sequence[Any]]]:
    first = queue.get()
    if first is None:
        return (), ()
    if isinstance(first, BaseException):
        raise first

    columns, made = first

    def rows() -> Iterator[Sequence[Any]]:
        yield from made
        while (batch := queue.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield from batch[1]

    return columns, rows()


def _offer(queue: Queue[Batch], batch: Batch, writer: Future[None] | None) -> None:
    """Queue a batch for its writer, waiting while the queue is full, unless the writer has
    stopped (its COPY refused a row): then nobody will take it."""
    while writer is None or not writer.done():
        try:
            queue.put(batch, timeout=0.1)
            return
        except Full:
            continue


def swap(built: Sequence[tuple[View, View, int]], dead_letters: DeadLetters) -> None:
    """Put each shadow's tables in place of its live view's, with the position it reached, all
    in one transaction: the live runners are held off (their positions locked) and readers wait
    on the table locks for the moment it takes, then see the rebuilt tables whole. The open dead
    letters a rebuild got past are open no more."""
    if not built:
        return
    with built[0][1].datastore.transaction(commit=True) as curs:
        for _, live, _ in built:
            live._locked_position(curs)
        for shadow, live, position in built:
            for table in live.tables:
                curs.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(live.table(table)))
                curs.execute(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        shadow.table(table), sql.Identifier(live.datastore.schema)
                    )
                )
            live.set_position(curs, position)
            dead_letters.resolve(curs, live.name, position)
    for shadow, _, _ in built:
        shadow.drop_tables()


class FoldFailed(Exception):
    """The view's fold met what SQL refuses: its streamed COPY is abandoned."""


def build(
    shadows: Sequence[View],
    fold_classes: Sequence[type[Fold]],
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    progress: Progress | None = None,
    stop: int | None = None,
) -> tuple[int, dict[str, str]]:
    """Fold the log (up to `stop`, all when None) into the views' shadow tables; returns the
    position reached, and the views
    left to the event-by-event path with why (a fold or a COPY met what SQL refuses).

    The shadow tables are prepared while the log is read, and written each on a connection of
    its own, side by side; a table whose rows are final as they are made (audit) is written
    while the log is still being read: the database's share of the work runs beside Python's,
    and those rows are never all held in memory."""
    if shadows:  # created once here: side by side, CREATE SCHEMA IF NOT EXISTS can collide
        with shadows[0].datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(shadows[0].datastore.schema)
                )
            )
    folds = {fold_class.view.name: fold_class() for fold_class in fold_classes}
    streams = {
        name: {table: Queue[Batch](maxsize=STREAM_DEPTH) for table in fold.streamed}
        for name, fold in folds.items()
    }
    handed: set[str] = set()
    written: dict[str, Future[None]] = {}

    def hand_over(folded: Folded) -> None:
        for name, queues in streams.items():
            if name in handed:
                continue
            if name in folded.failed:
                handed.add(name)
                for queue in queues.values():
                    _offer(queue, FoldFailed(folded.failed[name]), written.get(name))
                continue
            for table, queue in queues.items():
                _offer(queue, folds[name].rows(table), written.get(name))

    with ThreadPoolExecutor(max_workers=max(1, len(shadows))) as pool:
        prepared = {shadow.name: pool.submit(prepare, shadow) for shadow in shadows}
        try:
            for shadow in shadows:
                if streamed := streams[shadow.name]:
                    indexes = prepared[shadow.name].result()
                    fold = folds[shadow.name]
                    written[shadow.name] = pool.submit(write, shadow, fold, indexes, streamed)
            folded = fold_log(
                folds, recorder, mapper, stop=stop, progress=progress, every_batch=hand_over
            )
        except BaseException as error:  # no streamed writer may be left waiting for rows
            for name, queues in streams.items():
                for queue in queues.values():
                    stopped = FoldFailed(f"the rebuild stopped: {error!r}")
                    _offer(queue, stopped, written.get(name))
            raise
        for name in set(streams) - handed:
            for queue in streams[name].values():
                _offer(queue, None, written.get(name))
        left = dict(folded.failed)
        written |= {
            shadow.name: pool.submit(
                write, shadow, folds[shadow.name], prepared[shadow.name].result()
            )
            for shadow in shadows
            if shadow.name in folded.folds and not streams[shadow.name]
        }
        for name, done in written.items():
            try:
                done.result()
            except FoldFailed:
                pass
            except REFUSED as error:
                left[name] = f"{type(error).__name__}: {error}"
    for name, reason in left.items():
        log.warning("bulk_rebuild_left_to_replay", view=name, reason=reason)
    return folded.position, left
