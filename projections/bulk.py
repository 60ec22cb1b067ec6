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
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
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

from projections.base import Fold, View
from projections.follower import decode
from projections.poison import DeadLetters

log = structlog.get_logger(__name__)

PROGRESS_EVERY = 5000
TYPED = b'"_type_"'
# Sums exactly as PostgreSQL's numeric does, with no rounding at 28 digits.
EXACT = decimal.Context(
    prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[]
)

Progress = Callable[[int], None]
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
        self._classes: dict[str, tuple[type, Callable[[Any], Any]]] = {}

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
        typed = state.count(TYPED)
        if typed:
            for key, value in fields.items():
                if type(value) is dict and len(value) == 2 and "_type_" in value:
                    fields[key] = self.names[value["_type_"]].decode(value["_data_"])
                    typed -= 1
            if typed:
                raise ValueError("a typed value nested deeper: the mapper's object hook decodes it")
        known = self._classes.get(topic)
        if known is None:
            cls = resolve_topic(topic)
            known = self._classes[topic] = (
                cls,
                find_id_convertor(cls, cast(Hashable, type(originator_id))),
            )
        cls, convert = known
        fields["originator_id"] = convert(originator_id)
        fields["originator_version"] = version
        class_version = getattr(cls, "class_version", 1)
        from_version = fields.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(fields)
            from_version += 1
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", fields)
        return event


def read_log(
    recorder: ApplicationRecorder, stop: int | None
) -> Iterator[tuple[int, UUID, int, str, bytes]]:
    """Every stored event up to `stop` (all when None), in log order: one binary COPY, one
    snapshot of the log, streamed."""
    assert isinstance(recorder, PostgresApplicationRecorder)
    statement = sql.SQL(
        "COPY (SELECT notification_id::int8, originator_id::uuid, originator_version::int8, "
        "topic::text, state::bytea "
        "FROM {}.{} WHERE notification_id <= %s ORDER BY notification_id) "
        "TO STDOUT (FORMAT BINARY)"
    ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    last = stop if stop is not None else 2**63 - 1
    with (
        recorder.datastore.get_connection() as conn,
        conn.cursor() as cursor,
        cursor.copy(statement, (last,)) as copy,
    ):
        copy.set_types(["int8", "uuid", "int8", "text", "bytea"])
        yield from copy.rows()


@dataclass
class Folded:
    """The folds that took the whole log, the position they reached, and the views whose fold
    met an event it could not apply as SQL would (left to the event-by-event path)."""

    folds: dict[str, Fold]
    position: int
    failed: dict[str, str] = field(default_factory=dict)


def fold_log(
    fold_classes: Sequence[type[Fold]],
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    *,
    stop: int | None = None,
    progress: Progress | None = None,
) -> Folded:
    """Read the log once, decode each event once, and hand it to every view's fold."""
    folds = {fold_class.view.name: fold_class() for fold_class in fold_classes}
    decoded = Decoder(mapper)
    folded = Folded(folds, 0)
    running = list(folds.items())
    counted = 0
    with decimal.localcontext(EXACT):
        for position, originator_id, version, topic, state in read_log(recorder, stop):
            event = decoded(position, originator_id, version, topic, state)
            for name, fold in running:
                try:
                    fold.apply(event, position)
                except Exception as error:
                    folded.failed[name] = f"{type(error).__name__}: {error}"
                    running = [(n, f) for n, f in running if n != name]
            folded.position = position
            counted += 1
            if progress is not None and counted == PROGRESS_EVERY:
                progress(counted)
                counted = 0
    if progress is not None and counted:
        progress(counted)
    for name in folded.failed:
        del folds[name]
    return folded


def write(shadow: View, fold: Fold) -> None:
    """Fresh shadow tables for the view, filled with COPY, committed (the live ones untouched)."""
    shadow.drop_tables()
    shadow.create_table()
    with shadow.datastore.transaction(commit=True) as curs:
        for table in shadow.tables:
            columns, rows = fold.rows(table)
            if not columns:
                continue
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                shadow.table(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with curs.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)


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


def build(
    shadows: Sequence[View],
    fold_classes: Sequence[type[Fold]],
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    progress: Progress | None = None,
) -> tuple[int, dict[str, str]]:
    """Fold the log into the views' shadow tables; returns the position reached, and the views
    left to the event-by-event path with why (a fold or a COPY met what SQL refuses)."""
    folded = fold_log(fold_classes, recorder, mapper, progress=progress)
    left = dict(folded.failed)
    for shadow in shadows:
        fold = folded.folds.get(shadow.name)
        if fold is None:
            continue
        try:
            write(shadow, fold)
        except REFUSED as error:
            left[shadow.name] = f"{type(error).__name__}: {error}"
    for name, reason in left.items():
        log.warning("bulk_rebuild_left_to_replay", view=name, reason=reason)
    return folded.position, left
