"""Unit tests of the Item aggregate: its commands, the events they record, and the state they fold to.

The aggregate lives in memory only; time is passed in as fixed, timezone-aware datetimes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import (
    InvalidCommand,
    LeaseLost,
    NotLeaseHolder,
    RepeatedCompletion,
    ReportMismatch,
    StateConflict,
)
from domain.guards import Advance, Complete, Halt, Park, Step
from domain.item import Item, LeaseEnded, Status, report_fingerprint
from domain.pipeline import PipelineSpec, known_outcomes, parse_spec
from domain.values import By, Claimant, Completion, Failure, NewItem, Report

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ITEM_ID = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
SPEC = parse_spec(
    {
        "stages": [
            {"name": "draft", "lease_seconds": 60, "max_attempts": 2, "retry_backoff_seconds": 10},
            {"name": "review", "on": {"revise": "draft"}},
            {"name": "ship"},
        ],
        "max_visits_per_stage": 3,
        "max_transitions": 10,
    }
)
BUS = By("system:bus", "trigger")
STAGES = frozenset({"draft", "review", "ship"})
SWEEP = By("system:sweeper", "sweep")
OPS = By("operator:ops", "req")
HALT = Halt("budget", "over budget", then=Complete())


def _start(spec: PipelineSpec = SPEC, item_id: uuid.UUID = ITEM_ID) -> Item:
    new = NewItem("articles", "news", "An article", {"brief": "write"}, "fp-1")
    return Item.start(item_id, new, pipeline_version=1, spec=spec, by=By("agent:writer", "req-1"))


def _as(agent: str) -> Claimant:
    """An agent that may work on every stage of SPEC."""
    return Claimant(agent, STAGES)


WRITER = _as("writer")


def _claim(item: Item, stage: str | None = None, agent: str = "writer", now: datetime = NOW) -> str:
    stage = stage or item.stage
    return item.claim(stage, _as(agent), now, By(f"agent:{agent}", "req"))


def _complete(
    item: Item,
    lease_id: str,
    *,
    agent: str = "writer",
    now: datetime = NOW,
    outcome: str | None = None,
    output: Any = None,
    cost_usd: Decimal = Decimal("0.10"),
    tokens_in: int = 100,
    tokens_out: int = 50,
) -> LeaseEnded:
    """Complete the lease; returns the StageCompleted it recorded, the bus's trigger."""
    report = Report(cost_usd, tokens_in, tokens_out, 1234, {"steps": 1})
    completion = Completion({"text": "hello"} if output is None else output, outcome, report)
    item.complete_stage(lease_id, _as(agent), completion, now, By(f"agent:{agent}", "req"))
    return _last_event(item)


def _fail(
    item: Item,
    lease_id: str,
    *,
    agent: str = "writer",
    now: datetime = NOW,
    retryable: bool = True,
    error: str = "boom",
    cost_usd: Decimal = Decimal("0.05"),
    tokens_in: int = 10,
    tokens_out: int = 5,
) -> LeaseEnded:
    """Fail the lease; returns the StageFailed it recorded, the bus's trigger."""
    failure = Failure(error, retryable, Report(cost_usd, tokens_in, tokens_out, 10, None))
    item.fail_stage(lease_id, _as(agent), failure, now, By(f"agent:{agent}", "req"))
    return _last_event(item)


def _last_event(item: Item) -> LeaseEnded:
    event = item.pending_events[-1]
    assert isinstance(event, LeaseEnded)
    return event


def _decide(item: Item, trigger: LeaseEnded, now: datetime = NOW) -> Step:
    """Take the decision the bus takes on a trigger, and return it."""
    step = item.next_step(trigger, now)
    item.carry_out(step, BUS)
    return step


def _names(item: Item) -> list[str]:
    return [type(e).__name__ for e in item.collect_events()]


def _advancing_on_review() -> Item:
    """An item whose draft was completed and advanced, and whose review was completed."""
    item = _start()
    _decide(item, _complete(item, _claim(item)))
    _complete(item, _claim(item), outcome="revise")
    return item


# -- creation -------------------------------------------------------------------------------------


def test_start_records_item_created_then_first_stage_ready() -> None:
    """Starting an item records ItemCreated, then StageReady for the first stage, reason created."""
    item = _start()
    events = item.collect_events()
    assert [type(e).__name__ for e in events] == ["ItemCreated", "StageReady"]
    created, ready = events
    assert created.originator_id == ITEM_ID
    assert created.originator_version == 1
    assert (
        created.pipeline,
        created.pipeline_version,
        created.spec,
        created.topic,
        created.title,
        created.input,
        created.fingerprint,
        created.actor,
        created.caused_by,
    ) == (
        "articles",
        1,
        SPEC.to_dict(),
        "news",
        "An article",
        {"brief": "write"},
        "fp-1",
        "agent:writer",
        "req-1",
    )
    assert ready.originator_version == 2
    assert (
        ready.stage,
        ready.visit,
        ready.attempt,
        ready.not_before,
        ready.reason,
    ) == ("draft", 1, 1, None, "created")


def test_a_new_item_is_ready_at_its_first_stage_with_nothing_spent() -> None:
    """A new item stands ready at the first stage, first visit and attempt, with no cost."""
    item = _start()
    assert (item.status, item.stage, item.visit, item.attempt) == (Status.READY, "draft", 1, 1)
    assert item.visits == {"draft": 1}
    assert item.transitions == 0
    assert item.path == ["draft"]
    assert item.cost_usd == Decimal(0)
    assert (item.tokens_in, item.tokens_out) == (0, 0)
    assert item.version == 2
    assert item.parsed_spec == SPEC
    assert not item.is_final


# -- claim ---------------------------------------------------------------------------------------


def test_claim_gives_a_lease_named_after_the_item() -> None:
    """A claim returns a lease id starting with the item id's hex and holds it until now+lease."""
    item = _start()
    item.collect_events()
    lease_id = _claim(item)
    assert lease_id.startswith(ITEM_ID.hex)
    assert len(lease_id) == len(ITEM_ID.hex) + 16
    assert (item.status, item.lease_id, item.agent) == (Status.CLAIMED, lease_id, "writer")
    assert item.lease_expires_at == NOW + timedelta(seconds=60)
    (claimed,) = item.collect_events()
    assert type(claimed).__name__ == "StageClaimed"
    assert (claimed.stage, claimed.lease_id, claimed.agent, claimed.attempt) == (
        "draft",
        lease_id,
        "writer",
        1,
    )


def test_claim_of_another_stage_is_a_state_conflict() -> None:
    """Claiming a stage the item is not at is refused."""
    item = _start()
    with pytest.raises(StateConflict, match="not ready at 'review'"):
        _claim(item, stage="review")
    assert item.status == Status.READY


def test_claim_of_a_claimed_item_is_a_state_conflict() -> None:
    """A second claim of the same stage is refused while the first lease is held."""
    item = _start()
    _claim(item)
    with pytest.raises(StateConflict, match="item is claimed"):
        _claim(item, agent="rival")
    assert item.agent == "writer"


def test_claim_before_not_before_is_a_state_conflict_and_at_it_succeeds() -> None:
    """A retry cannot be claimed before its backoff ends, and can be claimed from that moment."""
    item = _start()
    _decide(item, _fail(item, _claim(item)))
    assert item.not_before == NOW + timedelta(seconds=10)
    with pytest.raises(StateConflict, match="not ready before"):
        _claim(item, now=NOW + timedelta(seconds=9))
    lease = _claim(item, now=NOW + timedelta(seconds=10))
    assert item.lease_id == lease
    assert item.attempt == 2


# -- lease renewal ----------------------------------------------------------------------------------


def test_renew_lease_extends_expiry_from_now() -> None:
    """Renewing moves the expiry to now plus the stage's lease and records LeaseRenewed."""
    item = _start()
    lease = _claim(item)
    item.collect_events()
    later = NOW + timedelta(seconds=30)
    item.renew_lease(lease, WRITER, later, By("agent:writer", "r"))
    assert item.lease_expires_at == later + timedelta(seconds=60)
    assert _names(item) == ["LeaseRenewed"]


def test_renew_lease_refuses_other_agents_and_expired_leases() -> None:
    """Only the holder may renew, and only before the lease expires."""
    item = _start()
    lease = _claim(item)
    by = By("agent:writer", "r")
    with pytest.raises(NotLeaseHolder):
        item.renew_lease(lease, _as("rival"), NOW, by)
    with pytest.raises(LeaseLost, match="expired"):
        item.renew_lease(lease, WRITER, NOW + timedelta(seconds=60), by)
    with pytest.raises(LeaseLost):
        item.renew_lease("bogus", WRITER, NOW, by)


# -- completion -------------------------------------------------------------------------------------


def test_completion_makes_the_item_await_a_decision_on_its_version() -> None:
    """Completing moves the item to advancing, with the completion's version as the trigger."""
    item = _start()
    lease = _claim(item)
    _complete(item, lease, output={"text": "draft 1"})
    assert item.status == Status.ADVANCING
    assert item.trigger_version == item.version == 4
    assert item.awaits_decision_on(item.version)
    assert not item.awaits_decision_on(item.version - 1)
    assert item.lease_expires_at is None
    assert item.outputs == {"draft": {"text": "draft 1"}}
    completed = item.collect_events()[-1]
    assert type(completed).__name__ == "StageCompleted"
    assert completed.originator_version == 4
    assert (completed.stage, completed.lease_id, completed.outcome) == ("draft", lease, None)


def test_repeated_identical_completion_raises_repeated_completion_with_its_version() -> None:
    """The same report twice is recognised as a repeat carrying the first answer's version."""
    item = _start()
    lease = _claim(item)
    _complete(item, lease)
    version = item.version
    with pytest.raises(RepeatedCompletion) as repeat:
        _complete(item, lease)
    assert repeat.value.version == version
    assert item.version == version


def test_repeated_completion_is_recognised_after_the_item_moved_on() -> None:
    """A late repeat still gets the first answer's version once the bus has advanced the item."""
    item = _start()
    lease = _claim(item)
    trigger = _complete(item, lease)
    version = item.version
    _decide(item, trigger)
    with pytest.raises(RepeatedCompletion) as repeat:
        _complete(item, lease)
    assert repeat.value.version == version


def test_completion_with_a_different_report_is_a_report_mismatch() -> None:
    """A second, different report on a finished lease is refused as a mismatch."""
    item = _start()
    lease = _claim(item)
    _complete(item, lease, output={"text": "first"})
    with pytest.raises(ReportMismatch):
        _complete(item, lease, output={"text": "second"})
    with pytest.raises(ReportMismatch):
        _fail(item, lease)


def test_completion_by_another_agent_is_refused() -> None:
    """Only the lease holder may complete the stage."""
    item = _start()
    lease = _claim(item)
    with pytest.raises(NotLeaseHolder):
        _complete(item, lease, agent="rival")
    assert item.status == Status.CLAIMED


@pytest.mark.parametrize("late", [timedelta(seconds=60), timedelta(hours=1)])
def test_completion_after_the_lease_expired_is_lease_lost(late: timedelta) -> None:
    """Once now reaches the lease's expiry, completing it is refused as LeaseLost."""
    item = _start()
    lease = _claim(item)
    with pytest.raises(LeaseLost, match="expired"):
        _complete(item, lease, now=NOW + late)
    assert item.status == Status.CLAIMED


def test_completion_with_an_unknown_lease_is_lease_lost() -> None:
    """A lease id that is not the item's current lease is refused."""
    item = _start()
    _claim(item)
    with pytest.raises(LeaseLost):
        _complete(item, ITEM_ID.hex + "0" * 16)


def test_completion_with_an_unknown_outcome_is_an_invalid_command() -> None:
    """An outcome the stage does not know is refused, naming the known ones, recording nothing."""
    item = _start()
    lease = _claim(item)
    item.collect_events()
    with pytest.raises(InvalidCommand, match="knows the outcomes done, not 'revise'"):
        _complete(item, lease, outcome="revise")
    assert item.status == Status.CLAIMED
    assert item.collect_events() == []


def test_completion_with_a_known_outcome_is_recorded() -> None:
    """A routed outcome and the explicit 'done' are both accepted."""
    item = _advancing_on_review()
    assert item.collect_events()[-1].outcome == "revise"
    other = _start()
    _complete(other, _claim(other), outcome="done")
    assert other.status == Status.ADVANCING


# -- failure and expiry -------------------------------------------------------------------------------


def test_failure_makes_the_item_await_a_decision() -> None:
    """A failure records StageFailed and waits for the bus like a completion does."""
    item = _start()
    lease = _claim(item)
    item.collect_events()
    _fail(item, lease, retryable=False, error="bad input")
    (failed,) = item.collect_events()
    assert type(failed).__name__ == "StageFailed"
    assert (failed.error, failed.retryable) == ("bad input", False)
    assert item.status == Status.ADVANCING
    assert item.awaits_decision_on(item.version)


def test_repeated_identical_failure_raises_repeated_completion() -> None:
    """The same failure report twice is a repeat, not a second failure."""
    item = _start()
    lease = _claim(item)
    _fail(item, lease)
    version = item.version
    with pytest.raises(RepeatedCompletion) as repeat:
        _fail(item, lease)
    assert repeat.value.version == version


def test_expire_lease_only_once_it_has_run_out() -> None:
    """A lease cannot be expired early or when none is held; at its expiry it can."""
    item = _start()
    with pytest.raises(StateConflict, match="no lease to expire"):
        item.expire_lease(NOW, SWEEP)
    lease = _claim(item)
    with pytest.raises(StateConflict, match="lease runs until"):
        item.expire_lease(NOW + timedelta(seconds=59), SWEEP)
    item.collect_events()
    item.expire_lease(NOW + timedelta(seconds=60), SWEEP)
    (expired,) = item.collect_events()
    assert type(expired).__name__ == "LeaseExpired"
    assert (expired.stage, expired.lease_id, expired.agent) == ("draft", lease, "writer")
    assert item.status == Status.ADVANCING
    assert item.awaits_decision_on(item.version)


def test_completion_after_the_lease_was_expired_is_lease_lost() -> None:
    """Once the sweeper expired a lease, its holder's late completion is LeaseLost."""
    item = _start()
    lease = _claim(item)
    later = NOW + timedelta(seconds=61)
    item.expire_lease(later, SWEEP)
    with pytest.raises(LeaseLost):
        _complete(item, lease, now=later)


# -- the bus's decisions --------------------------------------------------------------------------


def test_advance_and_finish_need_a_pending_decision() -> None:
    """Without a completion or failure to decide on, advancing and completing are refused."""
    item = _start()
    with pytest.raises(StateConflict, match="no decision to make"):
        item.carry_out(Advance("review", "advanced"), BUS)
    with pytest.raises(StateConflict, match="no decision to make"):
        item.carry_out(Complete(), BUS)


def test_advance_to_next_stage_counts_a_visit_and_a_transition() -> None:
    """Advancing to a new stage makes it ready at visit 1, attempt 1, and counts one transition."""
    item = _start()
    trigger = _complete(item, _claim(item))
    item.collect_events()
    assert _decide(item, trigger) == Advance("review", "advanced")
    (ready,) = item.collect_events()
    assert (ready.stage, ready.visit, ready.attempt, ready.reason) == (
        "review",
        1,
        1,
        "advanced",
    )
    assert (item.status, item.stage, item.visit, item.attempt) == (Status.READY, "review", 1, 1)
    assert item.visits == {"draft": 1, "review": 1}
    assert item.transitions == 1
    assert item.path == ["draft", "review"]
    assert item.trigger_version is None
    assert not item.awaits_decision_on(4)


def test_advance_along_a_revise_back_edge_counts_the_second_visit() -> None:
    """A revise from review back to draft makes draft's visit 2 and counts a second transition."""
    item = _advancing_on_review()
    assert _decide(item, _last_event(item)) == Advance("draft", "advanced")
    assert (item.stage, item.visit, item.attempt) == ("draft", 2, 1)
    assert item.visits == {"draft": 2, "review": 1}
    assert item.transitions == 2
    assert item.path == ["draft", "review", "draft"]


def test_advance_for_a_retry_keeps_the_visit_and_counts_an_attempt() -> None:
    """A retry re-readies the same stage at the next attempt, without a transition or path step."""
    item = _start()
    _fail(item, _claim(item))
    not_before = NOW + timedelta(seconds=10)
    item.carry_out(Advance("draft", "retry", not_before), BUS)
    assert (item.status, item.stage, item.visit, item.attempt) == (Status.READY, "draft", 1, 2)
    assert item.not_before == not_before
    assert item.visits == {"draft": 1}
    assert item.transitions == 0
    assert item.path == ["draft"]
    assert item.lease_id is None


def test_the_loop_guard_parks_a_third_revision() -> None:
    """With max_visits_per_stage 2, the second revise back to draft parks the item."""
    spec = parse_spec({**SPEC.to_dict(), "max_visits_per_stage": 2})
    item = _start(spec)
    _decide(item, _complete(item, _claim(item)))
    _decide(item, _complete(item, _claim(item), outcome="revise"))
    _decide(item, _complete(item, _claim(item)))
    decision = _decide(item, _complete(item, _claim(item), outcome="revise"))
    assert isinstance(decision, Park)
    assert item.status == Status.PARKED
    assert item.visits == {"draft": 2, "review": 2}
    assert "path: draft -> review -> draft -> review -> draft" in decision.detail


def test_finish_completes_the_item() -> None:
    """Completing the last stage and finishing makes the item done and final."""
    item = _start(parse_spec({"stages": [{"name": "draft"}]}))
    trigger = _complete(item, _claim(item))
    item.collect_events()
    assert _decide(item, trigger) == Complete()
    assert _names(item) == ["ItemCompleted"]
    assert item.status == Status.DONE
    assert item.is_final
    assert item.trigger_version is None


# -- park, halt, retry, resume, cancel -------------------------------------------------------------


def test_park_records_reason_and_refuses_a_second_park() -> None:
    """Parking records ItemParked with stage, reason and detail; a parked item cannot be parked."""
    item = _start()
    _fail(item, _claim(item), retryable=False)
    item.collect_events()
    item.carry_out(Park("failed", "bad input"), BUS)
    (parked,) = item.collect_events()
    assert type(parked).__name__ == "ItemParked"
    assert (parked.stage, parked.reason, parked.detail) == ("draft", "failed", "bad input")
    assert item.status == Status.PARKED
    assert not item.awaits_decision_on(item.version - 1)
    with pytest.raises(StateConflict, match="cannot be parked"):
        item.carry_out(Park("failed", "again"), BUS)


def test_halt_clears_the_lease_and_refuses_a_second_halt() -> None:
    """Halting a completed stage drops its lease; halting again or halting a parked item is
    refused."""
    item = _start()
    lease = _claim(item)
    _complete(item, lease)
    item.carry_out(HALT, BUS)
    assert (item.status, item.lease_id, item.agent) == (Status.HALTED, None, None)
    with pytest.raises(StateConflict, match="cannot be halted"):
        item.carry_out(HALT, BUS)
    with pytest.raises(LeaseLost):
        item.renew_lease(lease, WRITER, NOW, By("agent:writer", "late"))
    parked = _start()
    _fail(parked, _claim(parked), retryable=False)
    parked.carry_out(Park("failed", "x"), BUS)
    with pytest.raises(StateConflict, match="cannot be halted"):
        parked.carry_out(HALT, BUS)


def test_retry_makes_a_parked_item_ready_with_attempts_reset() -> None:
    """An operator's retry re-readies the parked stage at attempt 1, same visit, reason manual."""
    item = _start()
    clock = NOW
    for _ in range(2):
        _decide(item, _fail(item, _claim(item, now=clock), now=clock), now=clock)
        clock += timedelta(minutes=1)
    assert item.status == Status.PARKED
    assert item.attempt == 2
    item.collect_events()
    item.retry(OPS)
    (ready,) = item.collect_events()
    assert type(ready).__name__ == "StageReady"
    assert (ready.stage, ready.visit, ready.attempt, ready.reason) == ("draft", 1, 1, "manual")
    assert (item.status, item.stage, item.attempt, item.not_before) == (
        Status.READY,
        "draft",
        1,
        None,
    )
    assert item.transitions == 0
    assert item.path == ["draft"]


@pytest.mark.parametrize("state", ["ready", "claimed", "advancing", "halted", "done", "cancelled"])
def test_retry_is_refused_unless_parked(state: str) -> None:
    """Only a parked item can be retried."""
    item = _in_state(state)
    with pytest.raises(StateConflict, match="only a parked item can be retried"):
        item.retry(OPS)


def test_resume_after_a_halted_retry_makes_the_next_attempt_ready() -> None:
    """A failure halted for budget resumes as the retry it would have been: same stage, next attempt."""
    item = _start()
    _fail(item, _claim(item))
    item.carry_out(Halt("budget", "over", then=Advance("draft", "retry")), BUS)
    item.collect_events()
    item.resume(OPS)
    events = item.collect_events()
    assert [type(e).__name__ for e in events] == ["ItemResumed", "StageReady"]
    assert (events[1].stage, events[1].attempt, events[1].reason) == ("draft", 2, "manual")
    assert (item.status, item.not_before) == (Status.READY, None)


def test_resume_after_a_halted_advance_makes_the_next_stage_ready() -> None:
    """A completion halted for budget resumes by moving on to the stage it would have reached."""
    item = _start()
    _complete(item, _claim(item))
    next_stage = SPEC.stage_names[1]
    item.carry_out(Halt("budget", "over", then=Advance(next_stage, "advanced")), BUS)
    item.resume(OPS)
    assert (item.stage, item.status, item.attempt, item.visits[next_stage]) == (
        next_stage,
        Status.READY,
        1,
        1,
    )


def test_resume_after_a_halted_last_stage_completes_the_item() -> None:
    """A halt on the last stage's completion resumes by completing the item."""
    item = _start()
    _complete(item, _claim(item))
    item.carry_out(Halt("budget", "over", then=Complete()), BUS)
    item.collect_events()
    item.resume(OPS)
    assert [type(e).__name__ for e in item.collect_events()] == ["ItemResumed", "ItemCompleted"]
    assert item.status == Status.DONE


@pytest.mark.parametrize("state", ["ready", "claimed", "advancing", "parked", "done", "cancelled"])
def test_resume_is_refused_unless_halted(state: str) -> None:
    """Only a halted item can be resumed."""
    item = _in_state(state)
    with pytest.raises(StateConflict, match="only a halted item can be resumed"):
        item.resume(OPS)


def test_cancel_twice_is_a_state_conflict() -> None:
    """A cancelled item is final: cancelling again is refused, and its lease is lost."""
    item = _start()
    lease = _claim(item)
    item.collect_events()
    item.cancel(OPS)
    assert _names(item) == ["ItemCancelled"]
    assert (item.status, item.is_final, item.lease_id) == (Status.CANCELLED, True, None)
    with pytest.raises(StateConflict, match="cancelled already"):
        item.cancel(OPS)
    with pytest.raises(LeaseLost):
        _complete(item, lease)


def test_a_done_item_cannot_be_cancelled_parked_or_halted() -> None:
    """Once done, an item refuses cancel, park and halt."""
    item = _in_state("done")
    with pytest.raises(StateConflict):
        item.cancel(OPS)
    with pytest.raises(StateConflict):
        item.carry_out(Park("x", "x"), BUS)
    with pytest.raises(StateConflict):
        item.carry_out(HALT, BUS)


def _in_state(state: str) -> Item:
    """A fresh item brought to the given status by ordinary commands."""
    item = _start(parse_spec({"stages": [{"name": "draft"}]}))
    if state == "ready":
        return item
    lease = _claim(item)
    if state == "claimed":
        return item
    if state == "cancelled":
        item.cancel(OPS)
        return item
    _complete(item, lease)
    step = {"advancing": None, "halted": HALT, "parked": Park("x", "x"), "done": Complete()}[state]
    if step is not None:
        item.carry_out(step, BUS)
    return item


# -- spending -------------------------------------------------------------------------------------


def test_cost_and_tokens_accumulate_across_completions_and_failures() -> None:
    """Every completion and failure adds its cost (exact Decimal) and tokens to the item's totals."""
    item = _start()
    _decide(item, _fail(item, _claim(item), cost_usd=Decimal("0.10"), tokens_in=7, tokens_out=3))
    later = NOW + timedelta(minutes=1)
    claimed = _claim(item, now=later)
    _decide(item, _complete(item, claimed, now=later, cost_usd=Decimal("0.20"), tokens_in=100))
    _complete(item, _claim(item, now=later), now=later, cost_usd=Decimal("0.05"), tokens_out=1)
    assert item.cost_usd == Decimal("0.35")
    assert isinstance(item.cost_usd, Decimal)
    assert (item.tokens_in, item.tokens_out) == (7 + 100 + 100, 3 + 50 + 1)


# -- the event log is the state ----------------------------------------------------------------------


def test_replaying_the_events_rebuilds_the_same_item() -> None:
    """Folding an item's recorded events from nothing gives the same state as the live item."""
    item = _advancing_on_review()
    _decide(item, _last_event(item))
    lease = _claim(item)
    item.renew_lease(lease, WRITER, NOW, By("agent:writer", "r"))
    _fail(item, lease)
    events = item.collect_events()
    replayed = reduce(lambda aggregate, event: event.mutate(aggregate), events, None)
    assert isinstance(replayed, Item)
    assert vars(replayed) == vars(item)
    assert replayed.awaits_decision_on(item.version)


def test_report_fingerprint_ignores_key_order_but_not_values() -> None:
    """Equal reports fingerprint alike whatever their key order; a changed value changes it."""
    first = {"kind": "completed", "cost_usd": Decimal("0.1"), "output": {"a": 1, "b": 2}}
    reordered = {"output": {"b": 2, "a": 1}, "cost_usd": Decimal("0.1"), "kind": "completed"}
    assert report_fingerprint(first) == report_fingerprint(reordered)
    assert report_fingerprint(first) != report_fingerprint({**first, "output": {"a": 1}})


@st.composite
def journeys(draw: st.DrawFn) -> list[tuple[str, int]]:
    """What agents report at each step: complete with the n-th known outcome, or fail."""
    step = st.tuples(st.sampled_from(["complete", "fail", "fail-final"]), st.integers(0, 5))
    return draw(st.lists(step, max_size=30))


@settings(max_examples=60, deadline=None)
@given(
    steps=journeys(),
    max_visits=st.integers(1, 3),
    max_transitions=st.integers(1, 8),
)
def test_an_item_driven_by_any_reports_keeps_its_counters_within_the_limits(
    steps: list[tuple[str, int]], max_visits: int, max_transitions: int
) -> None:
    """Following the guards, an item never exceeds visit, transition or attempt limits."""
    spec = parse_spec(
        {**SPEC.to_dict(), "max_visits_per_stage": max_visits, "max_transitions": max_transitions}
    )
    item = _start(spec)
    clock = NOW
    for kind, choice in steps:
        if item.status != Status.READY:
            break
        clock = max(clock, item.not_before or clock)
        lease = _claim(item, now=clock)
        if kind == "complete":
            outcomes = known_outcomes(spec, item.stage)
            trigger = _complete(item, lease, now=clock, outcome=outcomes[choice % len(outcomes)])
        else:
            trigger = _fail(item, lease, now=clock, retryable=kind == "fail")
        _decide(item, trigger, now=clock)
        assert all(visit <= max_visits for visit in item.visits.values())
        assert item.transitions <= max_transitions
        assert item.attempt <= spec.stage(item.stage).max_attempts
        assert item.transitions == len(item.path) - 1 == sum(item.visits.values()) - 1
        assert item.status in (Status.READY, Status.PARKED, Status.DONE)


# -- bugs -----------------------------------------------------------------------------------------


def test_a_self_loop_advance_is_recorded_in_the_path() -> None:
    """Advancing from draft back to draft (a routed self-loop) adds draft to the path again."""
    item = _start(parse_spec({"stages": [{"name": "draft", "on": {"again": "draft"}}]}))
    trigger = _complete(item, _claim(item), outcome="again")
    assert _decide(item, trigger) == Advance("draft", "advanced")
    assert (item.visits, item.transitions) == ({"draft": 2}, 1)
    assert item.path == ["draft", "draft"]


def test_the_longest_lease_a_spec_accepts_can_be_claimed() -> None:
    """The largest lease_seconds parse_spec accepts still yields a claimable first stage."""
    item = _start(parse_spec({"stages": [{"name": "draft", "lease_seconds": 7 * 24 * 3600}]}))
    assert _claim(item).startswith(ITEM_ID.hex)
