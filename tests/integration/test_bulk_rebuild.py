"""The bulk rebuild folds the log in memory and writes with COPY: it must give exactly the rows
the event-by-event projection gives, keep the poison and skip rules, and never show a half table."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from psycopg import sql

from api.container import Container
from api.settings import Settings
from domain.eval_run import case_item_id
from domain.schedule import ScheduleSpec
from domain.values import (
    By,
    Claimant,
    Completion,
    Failure,
    Limits,
    NewItem,
    Registration,
    Report,
    TopicFacts,
)
from projections import bulk, maintenance
from projections.base import PoisonEvent, View
from projections.poison import OPEN, SKIPPED, Poison
from tests import release_log
from tests.integration.test_poison import _poisoned

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")
SPEC = {
    "stages": [
        {"name": "gather", "max_attempts": 2, "retry_backoff_seconds": 0},
        {"name": "write", "retry_backoff_seconds": 0},
        {"name": "check", "on": {"again": "write"}},
    ],
    "max_visits_per_stage": 2,
    "max_transitions": 20,
}


def _head(container: Container) -> int:
    return container.app.position()


def _catch_up(container: Container) -> None:
    """The live, event-by-event projection, run to the head of the log."""
    container.start(projections=True)
    head = _head(container)
    deadline = time.monotonic() + 30
    while any(view.position() < head for view in container.views.values()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for follower in container.followers:
        follower.stop()


def _tables(container: Container) -> dict[str, dict[Any, dict[str, Any]]]:
    """Every row of every view's tables, by primary key."""
    found: dict[str, dict[Any, dict[str, Any]]] = {}
    with container.pool.connection() as conn:
        for view in maintenance.VIEWS.values():
            for table, keys in view.tables.items():
                rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                found[table] = {tuple(row[k] for k in keys): dict(row) for row in rows}
    return found


def _differences(
    before: dict[str, dict[Any, dict[str, Any]]], after: dict[str, dict[Any, dict[str, Any]]]
) -> list[str]:
    found = []
    for table, rows in before.items():
        for key in set(rows) | set(after[table]):
            old, new = rows.get(key), after[table].get(key)
            if old is None or new is None:
                found.append(f"{table} {key}: {old} != {new}")
            elif old != new:
                changed = {c: (old[c], new[c]) for c in old if old[c] != new.get(c)}
                found.append(f"{table} {key}: {changed}")
    return found


def _drive(container: Container) -> None:
    """Items along a three-stage pipeline every way they can go: completed, retried, revised,
    parked and retried, halted and resumed, revoked, cancelled; with agents, topics and budgets
    changing around them."""
    app = container.app
    app.put_pipeline("bulk", SPEC, OPS)
    for stage in ("gather", "write", "check"):
        app.register_agent(Registration(f"bulk-{stage}", "agent", (stage,), "h"), OPS)
    app.register_agent(Registration("bulk-gone", "agent", ("write",), "h"), OPS)
    app.put_topic("bulk-a", TopicFacts("ann", 1, ("x",), {"k": 1}), OPS)
    app.put_budget("stage:write", Limits(Decimal("5"), Decimal("10")), OPS)
    for n in range(12):
        topic = ["bulk-a", "bulk-b", "bulk-c"][n % 3]
        item, _ = app.create_item(NewItem("bulk", topic, f"item {n}", {"n": n}, f"b{n}"), OPS)
        for step in range(7):
            current = app.item(item.id)
            if n % 6 == 5 and step == 1:
                app.cancel_item(item.id, OPS)
            if current.status != "ready" or (n % 6 == 5 and step == 1):
                break
            stage = current.stage
            revoke = n % 6 == 3 and step == 0
            name = "bulk-gone" if revoke else f"bulk-{stage}"
            holder = Claimant(name, frozenset({stage}))
            by = By(f"agent:{name}", "t")
            _, lease, _ = app.claim(item.id, stage, holder, by)
            report = Report(Decimal("0.25") * (n % 4), 10 * n, 3, 5)
            if n % 6 == 1 and step == 0:
                app.renew_lease(lease, holder, by)
                app.fail_stage(lease, holder, Failure("flaky", True, report), by)
            elif n % 6 == 2:
                app.fail_stage(lease, holder, Failure("broken", False, report), by)
            elif revoke:
                app.revoke_lease(item.id, lease, OPS)
            elif n % 6 == 4 and stage == "check" and step < 4:
                app.complete_stage(lease, holder, Completion({"s": stage}, "again", report), by)
            else:
                app.complete_stage(lease, holder, Completion({"s": stage}, None, report), by)
            if app.item(item.id).status == "advancing":
                app.decide([(list(app.events.get(item.id))[-1], By("system:bus", "t"))])
        if n % 6 == 2 and app.item(item.id).status == "parked":
            app.retry_item(item.id, OPS)
    app.put_topic("bulk-a", TopicFacts("bob", 2, ("y",), {"k": 2}), OPS)
    app.put_topic("bulk-d", TopicFacts(None, 0, (), {}), OPS)
    app.change_stages("bulk-gather", ["gather", "write"], OPS)
    app.disable_agent("bulk-check", OPS)
    app.put_budget("stage:write", Limits(Decimal("6"), Decimal("12")), OPS)
    _drive_issue_11(container)


def _drive_issue_11(container: Container) -> None:
    """Schedules defined, changed, fired, skipped and deleted; an eval run worked to its end;
    a done item rewound and forked; a capped stage."""
    app = container.app
    spec = ScheduleSpec("bulk", "bulk-s", "tick {tick}", every_seconds=3600)
    app.put_schedule("hourly", spec, OPS)
    app.put_schedule("hourly", replace(spec, title="hourly {tick}"), OPS)
    tick = app.clock().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    app.fire_schedule("hourly", tick, late=False, missed=0, by=OPS)
    app.skip_schedule("hourly", tick + timedelta(hours=1), missed=1, by=OPS)
    app.delete_schedule("hourly", OPS)
    run_id = uuid.uuid4()
    cases = [
        {"name": "one", "input": {"q": 1}, "checks": [{"kind": "contains", "value": "s"}]},
        {"name": "two", "input": {"q": 2}, "checks": [{"kind": "max_tokens", "value": 5}]},
    ]
    app.start_eval(
        "bulk",
        1,
        cases,
        topic="eval",
        run_id=run_id,
        fingerprint="e1",
        schema_problem=lambda schema: None,
        by=OPS,
    )
    for index in range(len(cases)):
        item_id = case_item_id(run_id, index)
        while (current := app.item(item_id)).status == "ready":
            holder = Claimant(f"bulk-{current.stage}", frozenset({current.stage}))
            by = By(f"agent:bulk-{current.stage}", "t")
            _, lease, _ = app.claim(item_id, current.stage, holder, by)
            report = Report(Decimal("0.5"), 10, 3, 5)
            app.complete_stage(lease, holder, Completion({"s": "s"}, None, report), by)
    done = next(i for i in app.events.get(case_item_id(run_id, 0)))
    app.rewind_item(done.originator_id, "write", "a second look", OPS)
    app.fork_item(done.originator_id, "check", OPS)
    app.put_pipeline(
        "bulk",
        {**SPEC, "stages": [{**SPEC["stages"][0], "max_concurrent": 2}, *SPEC["stages"][1:]]},
        OPS,
    )
    _drive_folds(container)


# Stage one retries after a long backoff and is capped; an item halts once it spent 1 USD.
BUDGETED = {
    "stages": [
        {"name": "one", "max_attempts": 3, "retry_backoff_seconds": 600, "max_concurrent": 3},
        {"name": "two", "retry_backoff_seconds": 0},
    ],
    "item_budget_usd": 1,
}
SPENT = Report(Decimal("1.5"), 7, 2, 5)
FREE = Report(Decimal("0"), 1, 1, 1)


def _work(container: Container, item_id: uuid.UUID, result: Completion | Failure) -> None:
    """The item's ready stage claimed and reported as `result`, and what follows decided."""
    app = container.app
    stage = app.item(item_id).stage
    holder = Claimant("bulk-x", frozenset({stage}))
    by = By("agent:bulk-x", "t")
    _, lease, _ = app.claim(item_id, stage, holder, by)
    if isinstance(result, Failure):
        app.fail_stage(lease, holder, result, by)
    else:
        app.complete_stage(lease, holder, result, by)
    if app.item(item_id).status == "advancing":
        app.decide([(list(app.events.get(item_id))[-1], By("system:bus", "t"))])


def _drive_folds(container: Container) -> None:
    """What the schedules, limits, report and evals views keep, every way it changes: a
    schedule defined disabled, enabled, fired late with ticks missed, deleted and put again; a
    cap moved from one stage to another; items waiting out a backoff, halted over their budget
    and resumed; eval cases halted, parked, retried, cancelled and done."""
    app = container.app
    app.put_pipeline("bulk-x", BUDGETED, OPS)
    app.register_agent(Registration("bulk-x", "agent", ("one", "two"), "h"), OPS)

    nightly = ScheduleSpec("bulk", "bulk-n", "night {tick}", every_seconds=86400, enabled=False)
    app.put_schedule("nightly", nightly, OPS)
    app.put_schedule("nightly", replace(nightly, enabled=True), OPS)
    tick = app.clock().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    app.fire_schedule("nightly", tick, late=True, missed=2, by=OPS)
    app.fire_schedule("nightly", tick + timedelta(days=1), late=False, missed=0, by=OPS)
    app.delete_schedule("nightly", OPS)
    app.put_schedule("nightly", replace(nightly, enabled=True, title="again {tick}"), OPS)

    halted, _ = app.create_item(NewItem("bulk-x", "bulk-x", "halts", {}, "x1"), OPS)
    _work(container, halted.id, Completion({"s": "one"}, None, SPENT))
    app.resume_item(halted.id, OPS)
    _work(container, halted.id, Completion({"s": "two"}, None, FREE))
    app.resume_item(halted.id, OPS)  # halted again at the end: resumed, it is done
    waiting, _ = app.create_item(NewItem("bulk-x", "bulk-x", "waits", {}, "x2"), OPS)
    _work(container, waiting.id, Failure("busy", True, FREE))  # ready again in ten minutes

    run_id = uuid.uuid4()
    checks = [{"kind": "contains", "value": "s"}]
    app.start_eval(
        "bulk-x",
        1,
        [{"name": f"x{n}", "input": {"n": n}, "checks": checks} for n in range(4)],
        topic="eval-x",
        run_id=run_id,
        fingerprint="e2",
        schema_problem=lambda schema: None,
        by=OPS,
    )
    over, parked, done, stays = (case_item_id(run_id, n) for n in range(4))
    _work(container, over, Completion({"s": "one"}, None, SPENT))
    app.resume_item(over, OPS)
    _work(container, over, Completion({"s": "two"}, None, FREE))
    _work(container, parked, Failure("broken", False, FREE))
    app.retry_item(parked, OPS)
    _work(container, parked, Completion({"s": "one"}, None, FREE))
    app.cancel_item(parked, OPS)
    _work(container, done, Completion({"s": "one"}, None, FREE))
    _work(container, done, Completion({"s": 2, "n": [1.5, None]}, None, FREE))
    _work(container, stays, Failure("broken", False, FREE))

    app.put_pipeline(
        "bulk-x",
        {**BUDGETED, "stages": [{"name": "one"}, {"name": "two", "max_concurrent": 1}]},
        OPS,
    )


@pytest.fixture
def rich(settings: Settings) -> Iterator[Container]:
    """The log of release 0.1.0 (every kind of event it knew, old versions among them), driven
    on by today's release; its views projected event by event, their followers stopped."""
    Container(settings).start().close()
    release_log.restore(settings.database_url or "")
    container = Container(settings).start()
    try:
        _drive(container)
        _catch_up(container)
        yield container
    finally:
        container.close()


def _rebuild(container: Container, names: list[str] | None = None) -> dict[str, int]:
    view_classes = (
        [maintenance.VIEWS[n] for n in names] if names else list(maintenance.VIEWS.values())
    )
    return maintenance.rebuild_many(
        view_classes, container.database, container.app.recorder, container.app.mapper
    )


def test_the_log_exercises_every_event_the_views_handle(rich: Container) -> None:
    """Every event class a view has a handler for appears in the log under test."""
    seen = {type(e) for e in _events(rich)}
    for view in maintenance.VIEWS.values():
        for event_class in view._handlers:
            assert any(issubclass(s, event_class) for s in seen), (view.name, event_class)


def _events(container: Container) -> list[Any]:
    app = container.app
    return [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=10**6)
    ]


def test_the_fast_decoder_gives_the_mappers_events(rich: Container) -> None:
    """Every stored event decodes to the same class and the same fields as the mapper gives."""
    app = rich.app
    decoder = bulk.Decoder(app.mapper)
    stored = app.recorder.select_notifications(start=1, limit=10**6)
    for n in stored:
        expected = app.mapper.to_domain_event(n)
        got = decoder(n.id, n.originator_id, n.originator_version, n.topic, n.state)  # type: ignore[arg-type]
        assert type(got) is type(expected)
        assert vars(got) == vars(expected), n.id


def test_a_bulk_rebuild_gives_the_rows_of_the_incremental_projection(rich: Container) -> None:
    """Every view rebuilt in one pass has exactly the rows the live runners wrote, and their
    position; then verify finds nothing."""
    before = _tables(rich)
    positions = _rebuild(rich)
    after = _tables(rich)
    assert _differences(before, after) == []
    head = _head(rich)
    assert positions == {name: head for name in maintenance.VIEWS}
    assert all(view.position() == head for view in rich.views.values())
    for view_class in maintenance.VIEWS.values():
        _, differences = maintenance.verify(
            view_class, rich.database, rich.app.recorder, rich.app.mapper
        )
        assert differences == [], [d.describe() for d in differences]


def test_each_view_rebuilt_alone_gives_the_same_rows(rich: Container) -> None:
    """One view at a time, the rows are the incremental ones too."""
    before = _tables(rich)
    for name in maintenance.VIEWS:
        _rebuild(rich, [name])
    assert _differences(before, _tables(rich)) == []


def test_the_log_takes_the_newer_views_every_way(rich: Container) -> None:
    """The schedules, limits, report and evals tables the live runners wrote show each way
    those views change, so the folds are held to all of them."""
    tables = _tables(rich)
    schedules = {key[0]: row for key, row in tables["schedules"].items()}
    assert (schedules["hourly"]["deleted"], schedules["hourly"]["skipped"]) == (True, 1)
    nightly = schedules["nightly"]
    assert (nightly["deleted"], nightly["enabled"], nightly["fired"], nightly["missed"]) == (
        False,
        True,
        2,
        2,
    )
    assert nightly["spec"]["title"] == "again {tick}"
    assert {key for key in tables["stage_limits"] if key[0].startswith("bulk")} == {
        ("bulk", "gather"),
        ("bulk-x", "two"),
    }
    items = {key[0]: row for key, row in tables["report_items"].items()}
    assert {"active", "done", "parked", "halted", "cancelled"} <= {
        i["status"] for i in items.values()
    }
    for counter in ("parked", "halted", "expired"):
        assert any(i[counter] for i in items.values()), counter
    assert any(i["eval"] and i["cost_usd"] for i in items.values())
    stages = tables["report_stages"].values()
    assert any(s["claimed_at"] is None for s in stages)
    assert any(s["ended_at"] is not None for s in stages)
    waited = [s["ready_at"] - items[s["item_id"]]["created_at"] for s in stages]
    assert max(waited) > timedelta(minutes=5)  # the backoff, not time spent waiting for an agent
    cases = [c for c in tables["eval_cases"].values() if c["name"].startswith("x")]
    assert sorted(c["status"] for c in cases) == ["cancelled", "done", "halted", "parked"]
    assert any(c["detail"].startswith("parked at one (failed)") for c in cases)
    assert any(
        c["outputs"] == {"one": {"s": "one"}, "two": {"s": 2, "n": [1.5, None]}} for c in cases
    )


def test_the_bulk_path_folds_every_view_it_has_a_fold_for(rich: Container) -> None:
    """On the log under test no fold meets what its view's SQL would refuse, so none of the
    views is left to be replayed event by event (which would hide a fold's fault)."""
    view_classes = [maintenance.VIEWS[name] for name in maintenance.FOLDS]
    with maintenance.datastore(
        rich.database, maintenance.SHADOW_SCHEMA, len(view_classes)
    ) as store:
        shadows = [view_class(store, live=False) for view_class in view_classes]
        try:
            position, left = bulk.build(
                shadows, list(maintenance.FOLDS.values()), rich.app.recorder, rich.app.mapper
            )
        finally:
            for shadow in shadows:
                shadow.drop_tables()
    assert left == {}
    assert position == _head(rich)


def test_every_fold_method_mirrors_a_handler(rich: Container) -> None:
    """A fold has a method for each of its view's handlers, so the same dispatch picks both."""
    for name, fold in maintenance.FOLDS.items():
        view: type[View] = maintenance.VIEWS[name]
        assert fold.view is view
        for method in set(view._handlers.values()):
            assert callable(getattr(fold, method, None)), (name, method)


def _positions(container: Container) -> dict[str, int]:
    return {name: view.position() for name, view in container.views.items()}


def test_readers_never_see_a_half_rebuilt_table(rich: Container) -> None:
    """While every view is rebuilt, a reader counting each table's rows sees them all, always."""
    expected = {table: len(rows) for table, rows in _tables(rich).items()}
    seen: list[dict[str, int]] = []
    done = threading.Event()

    def read() -> None:
        with rich.pool.connection() as conn:
            while not done.is_set():
                seen.append(
                    {
                        table: conn.execute(
                            sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
                        ).fetchone()["n"]  # type: ignore[index]
                        for table in expected
                    }
                )

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _rebuild(rich)
        _rebuild(rich, ["audit"])
    finally:
        done.set()
        reader.join()
    assert seen
    assert all(counts == expected for counts in seen)


def test_an_interrupted_rebuild_changes_nothing(rich: Container) -> None:
    """A rebuild stopped once the log is read (its audit rows already streaming into a shadow
    table) leaves every live table and position as it was; the next rebuild completes."""
    before, positions = _tables(rich), _positions(rich)

    def interrupt(events: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        maintenance.rebuild_many(
            list(maintenance.VIEWS.values()),
            rich.database,
            rich.app.recorder,
            rich.app.mapper,
            interrupt,
        )
    assert _tables(rich) == before
    assert _positions(rich) == positions
    _rebuild(rich)
    assert _differences(before, _tables(rich)) == []


def _stopped_at_poison(container: Container) -> int:
    """The topics view stopped at a poison event, every other view at the head."""
    poison = _poisoned(container)
    container.start(projections=True)
    deadline = time.monotonic() + 30
    while not container.dead_letters.all() or container.views["item_status"].position() < (
        _head(container)
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for follower in container.followers:
        follower.stop()
    return poison


def test_a_skipped_poison_that_still_fails_is_passed_over_again(container: Container) -> None:
    """The bulk path cannot write the poison's row, so topics is replayed event by event,
    passing over the skipped position as live did; the rows equal the live ones and the other
    views are rebuilt in bulk."""
    poison = _stopped_at_poison(container)
    maintenance.skip(container.database, "topics", poison, "bad owner", "operator:test")
    _catch_up(container)
    before = _tables(container)
    positions = _rebuild(container)
    assert positions == {name: _head(container) for name in maintenance.VIEWS}
    assert _differences(before, _tables(container)) == []
    (letter,) = container.dead_letters.all()
    assert (letter.view, letter.position, letter.status) == ("topics", poison, SKIPPED)
    _, differences = maintenance.verify(
        maintenance.VIEWS["topics"],
        container.database,
        container.app.recorder,
        container.app.mapper,
    )
    assert differences == []


def test_an_open_poison_stops_the_rebuild_and_changes_nothing(container: Container) -> None:
    """A poison nobody skipped stops the rebuild: no live table or position moves, not even
    those of the views the bulk path built."""
    poison = _stopped_at_poison(container)
    before, positions = _tables(container), _positions(container)
    with pytest.raises(PoisonEvent) as stopped:
        _rebuild(container)
    assert stopped.value.poison.position == poison
    assert _tables(container) == before
    assert _positions(container) == positions
    (letter,) = container.dead_letters.all()
    assert letter.status == OPEN


def test_a_fixed_view_takes_its_dead_letter_back(container: Container) -> None:
    """A view stopped at an event it now applies takes it back in on rebuild: the dead letter
    is resolved and the view reaches the head."""
    _drive(container)
    _catch_up(container)
    before = _tables(container)
    topics = container.views["topics"]
    stuck = _head(container) // 2
    with container.datastore.transaction(commit=True) as curs:
        topics.set_position(curs, stuck - 1)
        container.dead_letters.record(curs, "topics", Poison(stuck, "ItemCreated", "was broken"))
    _rebuild(container, ["topics"])
    assert container.dead_letters.all("topics") == []
    assert topics.position() == _head(container)
    assert _differences(before, _tables(container)) == []
