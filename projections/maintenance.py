"""Rebuild and verify: replay the log into shadow tables, then install them or diff them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, Mapper
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from projections import bulk
from projections.agents import AgentsFold, AgentsView
from projections.audit import AuditFold, AuditView
from projections.base import Fold, View, ViewGroup
from projections.evals import EvalsFold, EvalsView
from projections.follower import read_batch
from projections.item_status import ItemStatusFold, ItemStatusView
from projections.poison import DeadLetters
from projections.report import ReportFold, ReportView
from projections.schedules import LimitsFold, LimitsView, SchedulesFold, SchedulesView
from projections.spend import BudgetsFold, BudgetsView, SpendFold, SpendView
from projections.topics import TopicsFold, TopicsView
from store.database import Database

VIEWS: dict[str, type[View]] = {
    view.name: view
    for view in (
        *(ItemStatusView, TopicsView, AgentsView, SpendView, BudgetsView, AuditView),
        *(SchedulesView, LimitsView, ReportView, EvalsView),
    )
}
# The views folded in memory by a bulk rebuild; any other would be replayed event by event.
FOLDS: dict[str, type[Fold]] = {
    fold.view.name: fold
    for fold in (
        *(ItemStatusFold, TopicsFold, AgentsFold, SpendFold, BudgetsFold, AuditFold),
        *(SchedulesFold, LimitsFold, ReportFold, EvalsFold),
    )
}
SHADOW_SCHEMA = "stateowner_shadow"
SNAPSHOT_SCHEMA = "stateowner_snapshot"
REBUILD_BATCH = 2000

Progress = Callable[[int], None]


def views_named(name: str | None) -> list[type[View]]:
    if name is None:
        return list(VIEWS.values())
    if name not in VIEWS:
        raise KeyError(f"no projection named {name!r}; known: {', '.join(VIEWS)}")
    return [VIEWS[name]]


@contextmanager
def datastore(
    database: Database, schema: str = "", connections: int = 1
) -> Iterator[PostgresDatastore]:
    """A small datastore of its own for one maintenance run, in `schema` (default: the live one)."""
    store = database.datastore(pool_size=connections, schema=schema)
    try:
        yield store
    finally:
        store.close()


def replay(
    view: View,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    *,
    stop: int | None,
    progress: Progress | None = None,
    tolerate: set[int] | None = None,
) -> int:
    """Replay the log from the start into a freshly created view, committing every batch,
    passing over the positions to tolerate should they still fail."""
    view.drop_tables()
    view.create_table()
    group = ViewGroup([view], tolerate={view.name: tolerate or set()})
    return _replay_into(group, recorder, mapper, stop=stop, progress=progress)


def _replay_into(
    handler: ViewGroup,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    *,
    stop: int | None,
    progress: Progress | None,
) -> int:
    after = 0
    while True:
        batch = read_batch(recorder, mapper, after, REBUILD_BATCH, stop=stop)
        if not batch:
            return after
        handler.process_batch(batch, after)
        after = batch[-1][1]
        if progress is not None:
            progress(len(batch))
        if stop is not None and after >= stop:
            return after


def rebuild(
    view_class: type[View],
    database: Database,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    progress: Progress | None = None,
) -> int:
    positions = rebuild_many([view_class], database, recorder, mapper, progress)
    return positions[view_class.name]


def rebuild_many(
    view_classes: list[type[View]],
    database: Database,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    progress: Progress | None = None,
) -> dict[str, int]:
    """Rebuild several views from one pass over the log into shadow tables, then swap them all
    in at once (see projections/bulk.py). Every event is applied again — a fixed view takes its
    dead letters back in. A view the bulk path cannot build as SQL would (an event its tables
    refuse) is replayed event by event instead, as live: a position an operator skipped that
    still fails is passed over again; any other failure stops the rebuild (PoisonEvent) and
    leaves every live view as it was."""
    with (
        datastore(database) as live_store,
        datastore(database, SHADOW_SCHEMA, len(view_classes)) as shadow_store,
    ):
        dead_letters = DeadLetters(live_store)
        dead_letters.create_table()
        lives = [view_class(live_store) for view_class in view_classes]
        for live in lives:
            live.create_table()
        shadows = [view_class(shadow_store, live=False) for view_class in view_classes]
        folded = [shadow for shadow in shadows if shadow.name in FOLDS]
        position, left = bulk.build(
            folded, [FOLDS[shadow.name] for shadow in folded], recorder, mapper, progress
        )
        left.update({s.name: "no bulk fold" for s in shadows if s.name not in FOLDS})
        replayed = [shadow for shadow in shadows if shadow.name in left]
        if replayed:
            for shadow in replayed:
                shadow.drop_tables()
                shadow.create_table()
            tolerate = {view.name: dead_letters.skipped_positions(view.name) for view in replayed}
            _replay_into(
                ViewGroup(replayed, tolerate=tolerate),
                recorder,
                mapper,
                stop=position,
                progress=progress,
            )
        built = [
            (shadow, live, shadow.position() if shadow.name in left else position)
            for shadow, live in zip(shadows, lives, strict=True)
        ]
        bulk.swap(built, dead_letters)
        return {live.name: reached for _, live, reached in built}


def skip(database: Database, view_name: str, position: int, reason: str, actor: str) -> None:
    """An operator's decision: the view passes over the event it stopped at and goes on.
    Refused (NotDeadLettered) unless that position is the view's open dead letter."""
    view_class = views_named(view_name)[0]
    with datastore(database) as store:
        dead_letters = DeadLetters(store)
        view = view_class(store)
        with store.transaction(commit=True) as curs:
            reached = view._locked_position(curs)
            dead_letters.skip(curs, view_name, position, reason, actor)
            if reached < position:
                view.set_position(curs, position)


@dataclass(frozen=True)
class Difference:
    table: str
    key: dict[str, Any]
    live: dict[str, Any] | None
    rebuilt: dict[str, Any] | None

    def describe(self) -> str:
        key = ", ".join(f"{k}={v}" for k, v in self.key.items())
        if self.rebuilt is None:
            return f"{self.table} [{key}]: in the live table, absent from a replay of the log"
        if self.live is None:
            return f"{self.table} [{key}]: missing from the live table"
        changed = [
            f"{column}: live={self.live[column]!r} rebuilt={self.rebuilt[column]!r}"
            for column in self.live
            if self.live[column] != self.rebuilt.get(column)
        ]
        return f"{self.table} [{key}]: " + "; ".join(changed)


def _snapshot(live: View, snapshot: View) -> int:
    """Copy the live rows and their position as of one instant (one REPEATABLE READ snapshot)."""
    snapshot.drop_tables()
    with live.datastore.get_connection() as conn:
        conn.autocommit = False
        try:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            position = live.position_in(conn)
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SNAPSHOT_SCHEMA))
            )
            for table in live.tables:
                conn.execute(
                    sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                        snapshot.table(table), live.table(table)
                    )
                )
            conn.commit()
        finally:
            conn.autocommit = True
    return position


def _differences(view: View, left: View, right: View) -> list[Difference]:
    found: list[Difference] = []
    with view.datastore.get_connection() as conn:
        for table, keys in view.tables.items():
            only: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
            for side, a, b in (("live", left, right), ("rebuilt", right, left)):
                rows = conn.execute(
                    sql.SQL("SELECT * FROM {} EXCEPT SELECT * FROM {}").format(
                        a.table(table), b.table(table)
                    )
                ).fetchall()
                only[side] = {tuple(row[k] for k in keys): dict(row) for row in rows}
            for key in sorted(set(only["live"]) | set(only["rebuilt"]), key=str):
                found.append(
                    Difference(
                        table=table,
                        key=dict(zip(keys, key, strict=True)),
                        live=only["live"].get(key),
                        rebuilt=only["rebuilt"].get(key),
                    )
                )
    return found


def verify(
    view_class: type[View],
    database: Database,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    progress: Progress | None = None,
) -> tuple[int, list[Difference]]:
    """Rebuild into shadow tables up to the live position and list every row that differs: in
    bulk, or event by event (as rebuild_many does) when the bulk path cannot build the view."""
    with (
        datastore(database) as live_store,
        datastore(database, SNAPSHOT_SCHEMA) as snapshot_store,
        datastore(database, SHADOW_SCHEMA) as shadow_store,
    ):
        live = view_class(live_store)
        live.create_table()
        snapshot = view_class(snapshot_store, live=False)
        shadow = view_class(shadow_store, live=False)
        position = _snapshot(live, snapshot)
        dead_letters = DeadLetters(live_store)
        dead_letters.create_table()
        fold = FOLDS.get(view_class.name)
        if (
            fold is None
            or bulk.build([shadow], [fold], recorder, mapper, progress, stop=position)[1]
        ):
            skipped = dead_letters.skipped_positions(view_class.name)
            replay(shadow, recorder, mapper, stop=position, progress=progress, tolerate=skipped)
        try:
            return position, _differences(live, snapshot, shadow)
        finally:
            shadow.drop_tables()
            snapshot.drop_tables()
