"""The bus decides each trigger exactly once, alone or in a batch, and leaves moved items alone."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from api.runtime import Runtime
from bus.advance import Bus
from projections.follower import read_batch

pytestmark = pytest.mark.integration

ACTOR = "operator:test"
SPEC = {"stages": [{"name": "draft"}, {"name": "edit"}]}


def _completed_items(runtime: Runtime, count: int) -> list[Any]:
    app = runtime.app
    app.put_pipeline("p", SPEC, actor=ACTOR, caused_by="t")
    ids = []
    for n in range(count):
        item, _ = app.create_item(
            pipeline="p",
            topic="t",
            title=str(n),
            input={},
            fingerprint=str(n),
            actor=ACTOR,
            caused_by="t",
        )
        _, lease, _ = app.claim(item.id, stage="draft", agent="a", actor="a", caused_by="t")
        app.complete_stage(
            lease,
            agent="a",
            outcome=None,
            output={"n": n},
            cost_usd=Decimal(0),
            tokens_in=0,
            tokens_out=0,
            duration_ms=0,
            trace=None,
            actor="a",
            caused_by="t",
        )
        ids.append(item.id)
    return ids


def _log(runtime: Runtime, after: int = 0) -> list[tuple[Any, int]]:
    return read_batch(runtime.app.recorder, runtime.app.mapper, after, 10_000)


def test_a_batch_of_completions_is_decided_in_one_transaction(runtime: Runtime) -> None:
    """Five completions read in one batch get five decisions, appended together with the tracking."""
    ids = _completed_items(runtime, 5)
    batch = _log(runtime)
    bus = Bus(runtime.app)
    bus.process_batch(batch, 0)
    decisions = _log(runtime, batch[-1][1])
    assert [type(e).__name__ for e, _ in decisions] == ["StageReady"] * 5
    assert {e.originator_id for e, _ in decisions} == set(ids)
    assert [p for _, p in decisions] == list(range(batch[-1][1] + 1, batch[-1][1] + 6))
    triggers = {e.originator_id: p for e, p in batch if type(e).__name__ == "StageCompleted"}
    assert all(e.caused_by == f"event:{triggers[e.originator_id]}" for e, _ in decisions)
    assert bus.position() == batch[-1][1]
    assert all(runtime.app.item(i).stage == "edit" for i in ids)


def test_processing_a_batch_again_decides_nothing_more(runtime: Runtime) -> None:
    """After a crash the bus re-reads from its tracking; triggers already decided stay decided."""
    _completed_items(runtime, 3)
    batch = _log(runtime)
    bus = Bus(runtime.app)
    bus.process_batch(batch, 0)
    head = runtime.app.position()
    bus.process_batch(batch, 0)
    for trigger, position in batch:
        bus.process_batch([(trigger, position)], position - 1)
    assert runtime.app.position() == head


def test_a_trigger_whose_item_was_cancelled_is_left_alone(runtime: Runtime) -> None:
    """A completion followed by a cancel, before the bus runs, gets no decision."""
    ids = _completed_items(runtime, 2)
    runtime.app.cancel_item(ids[0], actor=ACTOR, caused_by="t")
    Bus(runtime.app).process_batch(_log(runtime), 0)
    assert runtime.app.item(ids[0]).status == "cancelled"
    assert runtime.app.item(ids[1]).stage == "edit"
    assert runtime.app.item(ids[1]).status == "ready"
