"""The bus decides each trigger exactly once, alone or in a batch, and leaves moved items alone:
here, as the backstop for triggers appended without their decision (a log from before, or
`decide_at_once` off)."""

from __future__ import annotations

from typing import Any

import pytest

from api.container import Container
from api.settings import Settings
from bus.advance import Bus
from domain.values import By, Claimant, Completion, Failure, NewItem
from projections.follower import read_batch

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"decide_at_once": False})


OPS = By("operator:test", "t")
SPEC = {"stages": [{"name": "draft"}, {"name": "edit"}]}
WORKER = Claimant("a", frozenset({"draft"}))


def _completed_items(container: Container, count: int) -> list[Any]:
    app = container.app
    app.put_pipeline("p", SPEC, OPS)
    agent = By("agent:a", "t")
    ids = []
    for n in range(count):
        item, _ = app.create_item(NewItem("p", "t", str(n), {}, str(n)), OPS)
        _, lease, _ = app.claim(item.id, "draft", WORKER, agent)
        app.complete_stage(lease, WORKER, Completion(output={"n": n}), agent)
        ids.append(item.id)
    return ids


def _log(container: Container, after: int = 0) -> list[tuple[Any, int]]:
    return read_batch(container.app.recorder, container.app.mapper, after, 10_000)


def test_a_batch_of_completions_is_decided_in_one_transaction(container: Container) -> None:
    """Five completions read in one batch get five decisions, appended together with the tracking."""
    ids = _completed_items(container, 5)
    batch = _log(container)
    bus = Bus(container.app)
    bus.process_batch(batch, 0)
    decisions = _log(container, batch[-1][1])
    assert [type(e).__name__ for e, _ in decisions] == ["StageReady"] * 5
    assert {e.originator_id for e, _ in decisions} == set(ids)
    assert [p for _, p in decisions] == list(range(batch[-1][1] + 1, batch[-1][1] + 6))
    triggers = {e.originator_id: p for e, p in batch if type(e).__name__ == "StageCompleted"}
    assert all(e.caused_by == f"event:{triggers[e.originator_id]}" for e, _ in decisions)
    assert bus.position() == batch[-1][1]
    assert all(container.app.item(i).stage == "edit" for i in ids)


def test_processing_a_batch_again_decides_nothing_more(container: Container) -> None:
    """After a crash the bus re-reads from its tracking; triggers already decided stay decided."""
    _completed_items(container, 3)
    batch = _log(container)
    bus = Bus(container.app)
    bus.process_batch(batch, 0)
    head = container.app.position()
    bus.process_batch(batch, 0)
    for trigger, position in batch:
        bus.process_batch([(trigger, position)], position - 1)
    assert container.app.position() == head


def test_a_trigger_whose_item_was_cancelled_is_left_alone(container: Container) -> None:
    """A completion followed by a cancel, before the bus runs, gets no decision."""
    ids = _completed_items(container, 2)
    container.app.cancel_item(ids[0], OPS)
    Bus(container.app).process_batch(_log(container), 0)
    assert container.app.item(ids[0]).status == "cancelled"
    assert container.app.item(ids[1]).stage == "edit"
    assert container.app.item(ids[1]).status == "ready"


def test_triggers_decided_in_their_own_append_are_only_passed(settings: Settings) -> None:
    """With decisions made at once, the bus reads each trigger already answered: it appends
    nothing but its position."""
    container = Container(settings.model_copy(update={"decide_at_once": True})).start()
    try:
        _completed_items(container, 3)
        batch = _log(container)
        head = container.app.position()
        bus = Bus(container.app)
        bus.process_batch(batch, 0)
        assert container.app.position() == head
        assert bus.position() == head
    finally:
        container.close()


def test_the_bus_falls_back_to_on_park_as_a_decision_at_once_does(container: Container) -> None:
    """Without decisions at once, the bus's decision on a failure that parks draft records the
    park and makes its on_park stage ready, in one append caused by the trigger."""
    spec = {
        "stages": [
            {"name": "draft", "max_attempts": 1, "on_park": "review"},
            {"name": "edit"},
            {"name": "review"},
        ]
    }
    app = container.app
    app.put_pipeline("fallback", spec, OPS)
    agent = By("agent:a", "t")
    item, _ = app.create_item(NewItem("fallback", "t", "x", {}, "x"), OPS)
    _, lease, _ = app.claim(item.id, "draft", WORKER, agent)
    app.fail_stage(lease, WORKER, Failure("gone", retryable=True), agent)
    batch = _log(container)
    Bus(container.app).process_batch(batch, 0)
    decided = _log(container, batch[-1][1])
    assert [type(e).__name__ for e, _ in decided] == ["ItemParked", "StageReady"]
    assert {e.caused_by for e, _ in decided} == {f"event:{batch[-1][1]}"}
    after = app.item(item.id)
    assert (after.status, after.stage) == ("ready", "review")
