"""Unit tests of what runs in a parked stage's place (on_park), and of an operator's rewind and
fork: the events they record and the state they fold to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from domain import guards
from domain.errors import InvalidPipelineSpec, StateConflict, UnknownStage
from domain.item import Item, Status
from domain.pipeline import PipelineSpec, parse_spec
from domain.values import By, Claimant, Completion, Failure, NewItem

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BUS = By("system:bus", "trigger")
OPS = By("operator:ops", "req")
AGENT = Claimant("writer", frozenset({"draft", "review", "human-review", "ship"}))
SPEC = parse_spec(
    {
        "stages": [
            {"name": "draft", "max_attempts": 1, "on_park": "human-review"},
            {"name": "review", "on": {"revise": "draft"}},
            {"name": "ship"},
            {"name": "human-review"},
        ],
        "max_visits_per_stage": 2,
    }
)


def _start(spec: PipelineSpec = SPEC) -> Item:
    new = NewItem("articles", "news", "An article", {"brief": "write"}, "fp")
    return Item.start(uuid.uuid4(), new, pipeline_version=1, spec=spec, by=OPS)


def _names(item: Item) -> list[str]:
    return [type(e).__name__ for e in item.collect_events()]


def _run(item: Item, output: Any = None, outcome: str | None = None) -> None:
    """Claim and complete the item's stage, deciding at once."""
    lease = item.claim(item.stage, AGENT, NOW, By("agent:writer", "r"))
    item.complete_stage(lease, AGENT, Completion(output or {"at": item.stage}, outcome), NOW, BUS)
    item.decide(item.pending_events[-1], NOW, BUS)  # type: ignore[arg-type]


def _fail(item: Item) -> None:
    lease = item.claim(item.stage, AGENT, NOW, By("agent:writer", "r"))
    item.fail_stage(lease, AGENT, Failure("boom", retryable=True), NOW, BUS)
    item.decide(item.pending_events[-1], NOW, BUS)  # type: ignore[arg-type]


# -- fallback --------------------------------------------------------------------------------------


def test_a_spec_names_a_fallback_that_is_another_of_its_stages() -> None:
    """on_park must name a stage of the spec, not the stage itself; it round-trips."""
    assert SPEC.stage("draft").on_park == "human-review"
    assert parse_spec(SPEC.to_dict()) == SPEC
    assert "on_park" not in SPEC.to_dict()["stages"][1]
    with pytest.raises(InvalidPipelineSpec, match="unknown stage 'nobody'"):
        parse_spec({"stages": [{"name": "a", "on_park": "nobody"}]})
    with pytest.raises(InvalidPipelineSpec, match="on_park must name another stage"):
        parse_spec({"stages": [{"name": "a", "on_park": "a"}]})


def test_the_fallback_guard_names_the_stage_unless_the_loop_guard_refuses() -> None:
    """A park falls back to on_park while the fallback stage may still be visited."""
    assert guards.fallback(SPEC, "draft", {"draft": 1}, 0, ["draft"]) == guards.Advance(
        "human-review", "fallback"
    )
    assert guards.fallback(SPEC, "review", {"draft": 1}, 0, ["draft"]) is None
    full = {"draft": 1, "human-review": 2}
    assert guards.fallback(SPEC, "draft", full, 3, ["draft"]) is None


def test_a_park_records_itself_and_makes_the_fallback_stage_ready() -> None:
    """Retries exhausted at draft: the park is recorded, then human-review is ready instead."""
    item = _start()
    item.collect_events()
    _fail(item)
    assert _names(item) == ["StageClaimed", "StageFailed", "ItemParked", "StageReady"]
    assert (item.status, item.stage, item.attempt) == (Status.READY, "human-review", 1)
    assert item.visits == {"draft": 1, "human-review": 1}


def test_a_fallback_stage_is_never_next_in_the_list() -> None:
    """Completing ship (before human-review in the list) completes the item; human-review is
    reached only in a park's place."""
    item = _start()
    for _ in ("draft", "review", "ship"):
        _run(item)
    assert (item.status, item.path) == (Status.DONE, ["draft", "review", "ship"])


def test_a_stage_without_a_fallback_stays_parked() -> None:
    """Without on_park, a park is where the item stops."""
    item = _start(parse_spec({"stages": [{"name": "draft", "max_attempts": 1}]}))
    _fail(item)
    assert item.status == Status.PARKED


# -- rewind ----------------------------------------------------------------------------------------


def test_rewinding_a_done_item_makes_an_earlier_stage_ready_as_a_new_visit() -> None:
    """A done item rewound to draft: ItemRewound, then draft ready on its second visit."""
    item = _start()
    for _ in ("draft", "review", "ship"):
        _run(item)
    assert item.status == Status.DONE
    item.collect_events()
    item.rewind("draft", "the facts changed", OPS)
    rewound, ready = item.collect_events()
    assert isinstance(rewound, Item.ItemRewound)
    assert (rewound.stage, rewound.reason, rewound.from_stage, rewound.from_status) == (
        "draft",
        "the facts changed",
        "ship",
        "done",
    )
    assert isinstance(ready, Item.StageReady)
    assert (ready.stage, ready.visit, ready.attempt, ready.reason) == ("draft", 2, 1, "rewound")
    assert (item.status, item.stage, item.transitions) == (Status.READY, "draft", 3)


def test_rewind_is_refused_for_unknown_or_unreached_stages_and_busy_items() -> None:
    """An unknown stage names the field; an unreached stage, a claimed or a cancelled item is a
    state conflict; the loop guard still counts."""
    item = _start()
    with pytest.raises(UnknownStage, match=r"stage: .* no stage 'nope'"):
        item.rewind("nope", "x", OPS)
    with pytest.raises(StateConflict, match="never reached stage 'ship'"):
        item.rewind("ship", "x", OPS)
    item.claim("draft", AGENT, NOW, By("agent:writer", "r"))
    with pytest.raises(StateConflict, match="claimed"):
        item.rewind("draft", "x", OPS)
    looped = _start()
    _run(looped)
    looped.rewind("draft", "again", OPS)
    with pytest.raises(StateConflict, match="loop guard"):
        looped.rewind("draft", "and again", OPS)
    looped.cancel(OPS)
    with pytest.raises(StateConflict, match="cancelled"):
        looped.rewind("review", "x", OPS)


# -- fork ------------------------------------------------------------------------------------------


def test_a_fork_is_ready_at_its_stage_with_the_earlier_stages_outputs() -> None:
    """Forked at ship, the new item carries draft's and review's outputs, not ship's."""
    source = _start()
    for _ in ("draft", "review", "ship"):
        _run(source)
    fork = Item.fork(
        uuid.uuid4(), source, "ship", pipeline_version=2, spec=SPEC, fingerprint="f", by=OPS
    )
    assert _names(fork) == ["ItemCreated", "ItemForked", "StageReady"]
    assert fork.forked_from == str(source.id)
    assert fork.outputs == {"draft": {"at": "draft"}, "review": {"at": "review"}}
    assert (fork.status, fork.stage, fork.visits, fork.pipeline_version) == (
        Status.READY,
        "ship",
        {"ship": 1},
        2,
    )
    with pytest.raises(UnknownStage):
        Item.fork(
            uuid.uuid4(), source, "gone", pipeline_version=2, spec=SPEC, fingerprint="", by=OPS
        )
