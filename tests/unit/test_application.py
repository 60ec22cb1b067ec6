"""The application service in memory (the library's POPO persistence): each command gets the
aggregate, calls it and saves what it recorded — all of it or nothing — on one ordered log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from eventsourcing.persistence import Tracking

from domain.application import StateOwner, lease_item_id
from domain.budget import Budget
from domain.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    EvalGateRefused,
    InvalidEvalCase,
    LeaseLost,
    NotFound,
    RepeatedCompletion,
    StateConflict,
)
from domain.item import Item, LeaseEnded, Status
from domain.schedule import ScheduleSpec
from domain.values import (
    By,
    Claimant,
    Completion,
    Failure,
    Limits,
    NewItem,
    Registration,
    TopicFacts,
)

pytestmark = pytest.mark.unit

OPS = By("operator:ops", "req-1")
BUS = By("system:bus", "event:1")
WRITER = By("agent:writer", "req-2")
HOLDER = Claimant("writer", frozenset({"draft", "publish"}))
SPEC = {
    "stages": [
        {"name": "draft", "lease_seconds": 60, "retry_backoff_seconds": 0},
        {"name": "publish"},
    ]
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _application(clock: Clock, *, decide_at_once: bool) -> Iterator[StateOwner]:
    application = StateOwner(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock, decide_at_once=decide_at_once
    )
    application.put_pipeline("article", SPEC, OPS)
    yield application
    application.close()


@pytest.fixture
def app(clock: Clock) -> Iterator[StateOwner]:
    yield from _application(clock, decide_at_once=True)


@pytest.fixture
def backstop(clock: Clock) -> Iterator[StateOwner]:
    """An application that leaves every decision to the bus, as a log from before would."""
    yield from _application(clock, decide_at_once=False)


def _new(title: str = "An item") -> NewItem:
    return NewItem("article", "news", title, {"brief": "b"}, fingerprint=title)


def _claimed(app: StateOwner) -> tuple[Item, str]:
    item, _ = app.create_item(_new(), OPS)
    _, lease, _ = app.claim(item.id, "draft", HOLDER, WRITER)
    return item, lease


def _trigger(app: StateOwner, item_id: uuid.UUID) -> LeaseEnded:
    last = list(app.events.get(item_id))[-1]
    assert isinstance(last, LeaseEnded)
    return last


class TestItems:
    def test_creating_an_item_appends_it_with_its_first_stage_ready(self, app: StateOwner) -> None:
        """create_item appends ItemCreated and StageReady together and returns the position."""
        before = app.position()
        item, position = app.create_item(_new(), OPS)
        assert position == before + 2
        stored = app.item(item.id)
        assert (stored.status, stored.stage, stored.pipeline_version) == ("ready", "draft", 1)
        assert stored.created_by == OPS.actor

    def test_items_created_without_an_id_get_distinct_ids(self, app: StateOwner) -> None:
        """Without an idempotency key, every item gets a fresh random id."""
        first, _ = app.create_item(_new(), OPS)
        second, _ = app.create_item(_new(), OPS)
        assert first.id != second.id

    def test_an_item_id_used_already_is_refused_and_nothing_is_appended(
        self, app: StateOwner
    ) -> None:
        """A second item with the id of the first is AlreadyExists, and the log does not grow."""
        item_id = uuid.uuid4()
        app.create_item(_new("first"), OPS, item_id)
        head = app.position()
        with pytest.raises(AlreadyExists):
            app.create_item(_new("second"), OPS, item_id)
        assert app.position() == head
        assert app.item(item_id).title == "first"

    def test_an_item_keeps_the_pipeline_version_it_began_on(self, app: StateOwner) -> None:
        """Items created before a revision stay on the old version; new ones take the new one."""
        old, _ = app.create_item(_new(), OPS)
        app.put_pipeline("article", {"stages": [{"name": "draft"}]}, OPS)
        new, _ = app.create_item(_new(), OPS)
        assert (app.item(old.id).pipeline_version, app.item(new.id).pipeline_version) == (1, 2)
        assert app.item(old.id).parsed_spec.stage_names == ["draft", "publish"]

    def test_a_lease_id_that_names_no_item_is_not_found(self) -> None:
        """A lease id is the item's id and a random part; anything else names no lease."""
        with pytest.raises(NotFound):
            lease_item_id("not-a-lease")


class TestLeases:
    def test_a_completion_is_saved_and_its_repeat_recognised(self, app: StateOwner) -> None:
        """The holder's completion is appended once; the identical report again appends nothing."""
        _, lease = _claimed(app)
        completion = Completion({"text": "done"})
        saved, position = app.complete_stage(lease, HOLDER, completion, WRITER)
        assert (saved.status, saved.stage, position) == (Status.READY, "publish", app.position())
        with pytest.raises(RepeatedCompletion):
            app.complete_stage(lease, HOLDER, completion, WRITER)
        assert app.position() == position

    def test_a_lease_past_its_expiry_is_lost(self, app: StateOwner, clock: Clock) -> None:
        """Once the application's clock passes the lease's end, its holder's heartbeat is refused."""
        _, lease = _claimed(app)
        app.renew_lease(lease, HOLDER, WRITER)
        clock.now += timedelta(seconds=61)
        with pytest.raises(LeaseLost):
            app.renew_lease(lease, HOLDER, WRITER)

    def test_a_second_claim_of_a_claimed_item_is_refused(self, app: StateOwner) -> None:
        """Claiming a stage someone holds is a state conflict, and appends nothing."""
        item, _ = _claimed(app)
        head = app.position()
        with pytest.raises(StateConflict):
            app.claim(item.id, "draft", Claimant("rival", HOLDER.stages), By("agent:rival", "r"))
        assert app.position() == head


class TestDecisionsAtOnce:
    def test_a_completion_and_its_decision_are_appended_together(self, app: StateOwner) -> None:
        """The next stage is ready in the completion's own append, decided by the bus's rules and
        naming the completion it answers."""
        item, lease = _claimed(app)
        head = app.position()
        _, position = app.complete_stage(lease, HOLDER, Completion(), WRITER)
        assert position == head + 2
        completed, ready = list(app.events.get(item.id))[-2:]
        assert isinstance(completed, Item.StageCompleted)
        assert isinstance(ready, Item.StageReady)
        assert (ready.stage, ready.reason, ready.actor) == ("publish", "advanced", "system:bus")
        assert ready.caused_by == f"event:{item.id}@{completed.originator_version}"
        assert backstop_has_nothing_to_decide(app, completed)

    def test_a_failure_is_retried_and_the_last_stage_completes_at_once(
        self, app: StateOwner
    ) -> None:
        """A retryable failure makes the stage ready again; completing the last stage completes
        the item, each in the report's append."""
        item, lease = _claimed(app)
        retried, _ = app.fail_stage(lease, HOLDER, Failure("flaky"), WRITER)
        assert (retried.status, retried.stage, retried.attempt) == (Status.READY, "draft", 2)
        _, lease, _ = app.claim(item.id, "draft", HOLDER, WRITER)
        app.complete_stage(lease, HOLDER, Completion(), WRITER)
        _, lease, _ = app.claim(item.id, "publish", HOLDER, WRITER)
        done, _ = app.complete_stage(lease, HOLDER, Completion(), WRITER)
        assert done.status == Status.DONE

    def test_an_expired_lease_is_decided_with_its_expiry(
        self, app: StateOwner, clock: Clock
    ) -> None:
        """The sweeper's expiry and the retry it calls for are one append."""
        item, _ = _claimed(app)
        clock.now += timedelta(seconds=61)
        expired, _ = app.expire_lease(item.id, By("system:sweeper", "sweep"))
        assert (expired.status, expired.attempt) == (Status.READY, 2)
        assert isinstance(list(app.events.get(item.id))[-2], Item.LeaseExpired)


def backstop_has_nothing_to_decide(app: StateOwner, trigger: LeaseEnded) -> bool:
    head = app.position()
    return app.decide([(trigger, BUS)]) is None and app.position() == head


class TestTheBusAsBackstop:
    def test_the_bus_advances_a_completed_stage_once(self, backstop: StateOwner) -> None:
        """decide appends the next stage's StageReady; deciding the same trigger again appends
        nothing."""
        item, lease = _claimed(backstop)
        backstop.complete_stage(lease, HOLDER, Completion(), WRITER)
        trigger = _trigger(backstop, item.id)
        assert backstop.decide([(trigger, BUS)]) == backstop.position()
        assert (backstop.item(item.id).stage, backstop.item(item.id).status) == ("publish", "ready")
        head = backstop.position()
        assert backstop.decide([(trigger, BUS)]) is None
        assert backstop.position() == head

    def test_a_decision_and_its_tracking_are_saved_together(self, backstop: StateOwner) -> None:
        """A tracking position recorded already refuses the whole decision: nothing is appended."""
        item, lease = _claimed(backstop)
        backstop.fail_stage(lease, HOLDER, Failure("flaky"), WRITER)
        trigger = _trigger(backstop, item.id)
        backstop.recorder.insert_tracking(Tracking(backstop.name, 7))
        head = backstop.position()
        with pytest.raises(ConcurrentUpdate):
            backstop.decide([(trigger, BUS)], Tracking(backstop.name, 7))
        assert backstop.position() == head
        assert backstop.item(item.id).status == Status.ADVANCING
        backstop.decide([(trigger, BUS)], Tracking(backstop.name, 8))
        assert backstop.item(item.id).attempt == 2
        assert backstop.recorder.max_tracking_id(backstop.name) == 8

    def test_decisions_on_several_items_are_saved_as_one(self, backstop: StateOwner) -> None:
        """Two triggers decided together append both decisions, next to each other."""
        triggers = []
        for _ in range(2):
            item, lease = _claimed(backstop)
            backstop.complete_stage(lease, HOLDER, Completion(), WRITER)
            triggers.append((_trigger(backstop, item.id), BUS))
        head = backstop.position()
        assert backstop.decide(triggers) == head + 2
        assert all(backstop.item(t.originator_id).stage == "publish" for t, _ in triggers)

    def test_waiting_claims_are_told_only_of_stages_claimable_now(
        self, backstop: StateOwner
    ) -> None:
        """Ready listeners hear of a new item's stage, not of a retry that waits for its backoff."""
        told: list[tuple[str, uuid.UUID]] = []
        backstop.ready_listeners.append(lambda stage, item_id: told.append((stage, item_id)))
        item, _ = _claimed(backstop)
        assert told == [("draft", item.id)]
        backstop.put_pipeline(
            "slow", {"stages": [{"name": "draft", "retry_backoff_seconds": 60}]}, OPS
        )
        slow, _ = backstop.create_item(NewItem("slow", "news", "s", {}), OPS)
        _, slow_lease, _ = backstop.claim(slow.id, "draft", HOLDER, WRITER)
        backstop.fail_stage(slow_lease, HOLDER, Failure("flaky"), WRITER)
        backstop.decide([(_trigger(backstop, slow.id), BUS)])
        assert told == [("draft", item.id), ("draft", slow.id)]


class TestTopicsAgentsBudgets:
    def test_a_topic_described_as_it_is_appends_nothing(self, app: StateOwner) -> None:
        """Putting the same facts again answers with the current position and appends nothing."""
        facts = TopicFacts("ann", 1, ("x",), {"k": 1})
        _, first = app.put_topic("news", facts, OPS)
        _, again = app.put_topic("news", facts, OPS)
        assert again == first == app.position()
        topic, changed = app.put_topic("news", TopicFacts("bob"), OPS)
        assert changed == first + 1
        assert topic.owner == "bob"

    def test_an_agent_name_is_registered_once(self, app: StateOwner) -> None:
        """A second registration under a taken name is AlreadyExists."""
        app.register_agent(Registration("writer", "agent", ("draft",), "h1"), OPS)
        with pytest.raises(AlreadyExists):
            app.register_agent(Registration("writer", "agent", (), "h2"), OPS)
        assert app.agent("writer").token_hash == "h1"

    def test_a_crossing_is_recorded_once_per_window(self, app: StateOwner) -> None:
        """record_crossing appends the alert and the breaker's opening once; again, nothing."""
        app.put_budget("global", Limits(Decimal(1), Decimal(2)), OPS)
        recorded = app.record_crossing("global", "2026-03-01", Decimal(3), halted=True, by=BUS)
        assert [type(e) for e in recorded] == [Budget.BudgetAlerted, Budget.BreakerOpened]
        assert app.record_crossing("global", "2026-03-01", Decimal(4), halted=True, by=BUS) == []

    def test_a_reset_is_for_the_clocks_window(self, app: StateOwner, clock: Clock) -> None:
        """An operator's reset closes the breaker for today's window, once."""
        app.put_budget("global", Limits(Decimal(1), Decimal(2)), OPS)
        budget, _ = app.reset_breaker("global", OPS)
        assert budget.reset_windows == ["2026-03-01"]
        with pytest.raises(StateConflict):
            app.reset_breaker("global", OPS)
        clock.now += timedelta(days=1)
        assert app.reset_breaker("global", OPS)[0].reset_windows[-1] == "2026-03-02"


class TestActiveVersions:
    GATED = {**SPEC, "eval_gate": {"tolerance": 0.0}}

    def test_without_a_gate_every_version_is_active_at_once_and_nothing_more_is_written(
        self, app: StateOwner
    ) -> None:
        """A pipeline that never had a gate runs its latest version, as before evals existed."""
        app.put_pipeline("article", SPEC, OPS)
        assert app.active_version("article")[1] == 2
        assert app.activation("article") is None

    def test_a_gate_holds_new_versions_back_until_one_is_activated(self, app: StateOwner) -> None:
        """Version 2 carries a gate and is active at once; version 3 waits behind it; items start
        on version 2 until version 3 is forced in."""
        app.put_pipeline("article", self.GATED, OPS)
        app.put_pipeline("article", SPEC, OPS)
        assert app.active_version("article")[1] == 2
        item, _ = app.create_item(_new(), OPS)
        assert item.pipeline_version == 2
        with pytest.raises(EvalGateRefused):
            app.activate_version(
                "article",
                3,
                expected_active=2,
                candidate=None,
                active_run=None,
                force=False,
                by=OPS,
            )
        with pytest.raises(ConcurrentUpdate):
            app.activate_version(
                "article", 3, expected_active=1, candidate=None, active_run=None, force=True, by=OPS
            )
        active, _, changed = app.activate_version(
            "article", 3, expected_active=2, candidate=None, active_run=None, force=True, by=OPS
        )
        assert (active, changed) == (3, True)
        assert app.create_item(_new(), OPS)[0].pipeline_version == 3
        with pytest.raises(NotFound):
            app.activate_version(
                "article", 9, expected_active=3, candidate=None, active_run=None, force=True, by=OPS
            )

    def test_scheduled_and_forked_items_start_on_the_active_version_too(
        self, app: StateOwner
    ) -> None:
        """A schedule's tick and a fork without a version take the active version, not the
        newest one waiting behind the gate; a fork may still name the newer one."""
        app.put_pipeline("article", self.GATED, OPS)
        app.put_pipeline("article", SPEC, OPS)
        app.put_schedule(
            "hourly", ScheduleSpec("article", "news", "Hourly", every_seconds=3600), OPS
        )
        tick = datetime(2026, 11, 26, 12, tzinfo=UTC)
        scheduled, _ = app.fire_schedule("hourly", tick, late=False, missed=0, by=OPS)
        assert scheduled.pipeline_version == 2
        forked, _ = app.fork_item(scheduled.id, "draft", OPS)
        assert forked.pipeline_version == 2
        newer, _ = app.fork_item(scheduled.id, "draft", OPS, pipeline_version=3)
        assert newer.pipeline_version == 3

    def test_an_eval_run_and_its_items_are_one_unit(self, app: StateOwner) -> None:
        """Each case is an eval item on the run's version; a bad case appends nothing."""
        head = app.position()
        with pytest.raises(InvalidEvalCase):
            app.start_eval(
                "article",
                1,
                [{"name": "a", "checks": [{"kind": "regex", "value": "("}]}],
                topic="eval",
                run_id=uuid.uuid4(),
                fingerprint="f",
                schema_problem=lambda schema: None,
                by=OPS,
            )
        assert app.position() == head
        run, _ = app.start_eval(
            "article",
            1,
            [{"name": "a"}, {"name": "b"}],
            topic="eval",
            run_id=uuid.uuid4(),
            fingerprint="f",
            schema_problem=lambda schema: None,
            by=OPS,
        )
        items = [app.item(item_id) for item_id in run.item_ids()]
        assert [(i.eval, i.pipeline_version, i.stage) for i in items] == [(True, 1, "draft")] * 2
