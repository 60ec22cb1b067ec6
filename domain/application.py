"""The application service: get an aggregate, call its command, save what it recorded."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Recording, Tracking

from domain.activation import Activation
from domain.agent import Agent
from domain.budget import Budget, parse_scope
from domain.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    LeaseTimedOut,
    NotFound,
    StateConflict,
)
from domain.eval_run import EvalRun, case_item_id
from domain.evals import MAX_CASES, RunSummary, SchemaProblem, parse_cases
from domain.guards import window_of
from domain.item import Item, LeaseEnded, trigger_name
from domain.pipeline import Pipeline, SpecLimits, accept_spec
from domain.recorded import Recorded
from domain.schedule import Schedule, ScheduleSpec, check_spec
from domain.topic import Topic
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

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

COMMAND_ATTEMPTS = 5
# A holder's heartbeats and reports race only each other; they must not lose to themselves.
LEASE_COMMAND_ATTEMPTS = 30
RETRY_PAUSE_SECONDS = 0.002
# Stands among the halted topics for the `eval` scope's open breaker (no topic has a space).
EVALS_HALTED = "scope eval"


def utc_now() -> datetime:
    return datetime.now(UTC)


def lease_item_id(lease_id: str) -> uuid.UUID:
    """A lease id names its item, so a lease can be found without a read model."""
    try:
        return uuid.UUID(hex=lease_id[:32])
    except ValueError:
        raise NotFound(f"no lease {lease_id!r}") from None


class StateOwner(Application[uuid.UUID]):
    """One application, so one global, totally ordered log for every aggregate."""

    name = "StateOwner"
    recorder: ProcessRecorder

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Callable[[], datetime] = utc_now,
        spec_limits: SpecLimits | None = None,
        decide_at_once: bool = True,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.spec_limits = spec_limits or SpecLimits()
        self.decide_at_once = decide_at_once
        # Told (stage, item id) once a stage is claimable now, so waiting claims can wake at once.
        self.ready_listeners: list[Callable[[str, uuid.UUID], None]] = []
        # Told an agent's id once a change to it is saved, so no copy of it outlives the change.
        self.agent_listeners: list[Callable[[uuid.UUID], None]] = []

    def construct_recorder(self) -> ProcessRecorder:
        # A process recorder lets the bus append its decision and its tracking in one transaction.
        return self.factory.process_recorder()

    # -- plumbing -------------------------------------------------------------------------------

    def _get(
        self, cls: type[A], aggregate_id: uuid.UUID, what: str, version: int | None = None
    ) -> A:
        try:
            aggregate: object = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(f"no {what}") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"no {what}")
        return aggregate

    def _save(self, *aggregates: Aggregate, tracking: Tracking | None = None) -> int:
        """Append every pending event of the aggregates in one transaction; return the position."""
        processing_event = ProcessingEvent[uuid.UUID](tracking=tracking)
        processing_event.collect_events(*aggregates)
        try:
            recordings: list[Recording[uuid.UUID]] = self._record(processing_event)
        except IntegrityError as error:
            raise ConcurrentUpdate from error
        self._notify(recordings)
        for aggregate in aggregates:
            if isinstance(aggregate, Agent):
                for agent_listener in self.agent_listeners:
                    agent_listener(aggregate.id)
        for new_event in processing_event.events:
            if isinstance(new_event, Item.StageReady) and new_event.not_before is None:
                for listener in self.ready_listeners:
                    listener(new_event.stage, new_event.originator_id)
        return max((r.notification.id for r in recordings), default=0)

    def _create(self, aggregate: A, exists: str) -> tuple[A, int]:
        try:
            return aggregate, self._save(aggregate)
        except ConcurrentUpdate:
            raise AlreadyExists(exists) from None

    def _retrying(self, command: Callable[[], T], attempts: int = COMMAND_ATTEMPTS) -> T:
        """Run a get-call-save command again when another writer appended first, after a
        short random pause so that rivals fall out of step."""
        for attempt in range(1, attempts):
            try:
                return command()
            except ConcurrentUpdate:
                time.sleep(random.uniform(0, RETRY_PAUSE_SECONDS * attempt))  # noqa: S311
        return command()

    def _change(self, get: Callable[[], A], change: Callable[[A], object]) -> tuple[A, int]:
        """Get an aggregate, run a command on it and save what it recorded (a command that
        recorded nothing appends nothing), again when another writer appended first."""

        def command() -> tuple[A, int]:
            aggregate = get()
            change(aggregate)
            return aggregate, self._save_if_changed(aggregate)

        return self._retrying(command)

    def _put(
        self, get: Callable[[], A], create: Callable[[], A], change: Callable[[A], object]
    ) -> tuple[A, int]:
        """Change the aggregate, or create it when there is none yet (again on a conflict)."""

        def command() -> tuple[A, int]:
            try:
                aggregate = get()
            except NotFound:
                aggregate = create()
            else:
                change(aggregate)
            return aggregate, self._save_if_changed(aggregate)

        return self._retrying(command)

    def _save_if_changed(self, aggregate: Aggregate) -> int:
        return self._save(aggregate) if aggregate.pending_events else self.position()

    def position(self) -> int:
        return self.recorder.max_notification_id() or 0

    # -- agents -------------------------------------------------------------------------------

    def register_agent(self, registration: Registration, by: By) -> tuple[Agent, int]:
        return self._create(
            Agent.register(registration, by), f"an agent named {registration.name!r} exists already"
        )

    def agent(self, name: str) -> Agent:
        return self._get(Agent, Agent.create_id(name), f"agent named {name!r}")

    def agent_by_id(self, agent_id: uuid.UUID) -> Agent:
        return self._get(Agent, agent_id, "such agent")

    def disable_agent(self, name: str, by: By) -> tuple[Agent, int]:
        return self._change(lambda: self.agent(name), lambda agent: agent.disable(by))

    def rotate_token(self, name: str, token_hash: str, by: By) -> tuple[Agent, int]:
        return self._change(
            lambda: self.agent(name), lambda agent: agent.rotate_token(token_hash, by)
        )

    def change_stages(self, name: str, stages: list[str], by: By) -> tuple[Agent, int]:
        return self._change(lambda: self.agent(name), lambda agent: agent.change_stages(stages, by))

    def set_agent_limits(
        self, name: str, max_concurrent_leases: int | None, by: By
    ) -> tuple[Agent, int]:
        return self._change(
            lambda: self.agent(name), lambda agent: agent.set_limits(max_concurrent_leases, by)
        )

    # -- pipelines ----------------------------------------------------------------------------

    def put_pipeline(self, name: str, raw_spec: Any, by: By) -> tuple[Pipeline, int]:
        """Define or revise a pipeline. The new version is active at once unless the active
        version has an eval gate; then it waits for `activate_version`."""
        spec = accept_spec(raw_spec, self.spec_limits)

        def command() -> tuple[Pipeline, int]:
            try:
                pipeline = self.pipeline(name)
            except NotFound:
                pipeline = Pipeline.define(name, spec, by)
                return pipeline, self._save(pipeline)
            latest = pipeline.version
            activation = self.activation(name)
            active = self._active_of(activation, latest)
            active_spec = (
                pipeline.parsed if active == latest else self.pipeline(name, active).parsed
            )
            pipeline.revise(spec, by)
            if active_spec.eval_gate is None:
                if activation is None:  # none yet: the latest version runs, as it always did
                    return pipeline, self._save(pipeline)
                activation.activate_at_once(pipeline.version, active, by)
            elif activation is None:  # the gate holds the version active now in place
                activation = Activation.begin(name, by)
                activation.activate_at_once(active, None, by)
            else:
                return pipeline, self._save(pipeline)
            return pipeline, self._save(pipeline, activation)

        return self._retrying(command)

    def pipeline(self, name: str, version: int | None = None) -> Pipeline:
        return self._get(
            Pipeline, Pipeline.create_id(name), f"pipeline named {name!r}", version=version
        )

    # -- schedules ------------------------------------------------------------------------------

    def put_schedule(self, name: str, spec: ScheduleSpec, by: By) -> tuple[Schedule, int]:
        check_spec(spec)
        try:
            self.pipeline(spec.pipeline)
        except NotFound:
            raise NotFound(f"pipeline: no pipeline named {spec.pipeline!r}") from None
        return self._put(
            lambda: self.schedule(name),
            lambda: Schedule.define(name, spec, self.clock(), by),
            lambda schedule: schedule.change(spec, self.clock(), by),
        )

    def schedule(self, name: str) -> Schedule:
        return self._get(Schedule, Schedule.create_id(name), f"schedule named {name!r}")

    def delete_schedule(self, name: str, by: By) -> tuple[Schedule, int]:
        def get() -> Schedule:
            schedule = self.schedule(name)
            if schedule.deleted:
                raise NotFound(f"no schedule named {name!r}")
            return schedule

        return self._change(get, lambda schedule: schedule.delete(by))

    def fire_schedule(
        self, name: str, tick: datetime, *, late: bool, missed: int, by: By
    ) -> tuple[Item, int]:
        """Create the tick's item and record the firing on the schedule, in one append. A rival
        (another scheduler, or this one before a crash) that fired the tick first makes this
        refuse: the item id and the schedule's version are both taken."""
        schedule = self.schedule(name)
        spec = schedule.parsed
        item_id = schedule.fire(tick, late=late, missed=missed, by=by)
        latest, active = self.active_version(spec.pipeline)
        new = NewItem(
            spec.pipeline, spec.topic, spec.title.replace("{tick}", tick.isoformat()), spec.input
        )
        item = Item.start(
            item_id,
            new,
            pipeline_version=active,
            spec=self.pipeline_version(latest, active).parsed,
            by=by,
        )
        return item, self._save(schedule, item)

    def skip_schedule(self, name: str, tick: datetime, *, missed: int, by: By) -> int:
        schedule = self.schedule(name)
        schedule.skip(tick, missed=missed, by=by)
        return self._save(schedule)

    def activation(self, name: str) -> Activation | None:
        try:
            return self._get(Activation, Activation.create_id(name), "activation")
        except NotFound:
            return None

    @staticmethod
    def _active_of(activation: Activation | None, latest: int) -> int:
        if activation is None or activation.active_version is None:
            return latest
        return activation.active_version

    def active_version(self, name: str) -> tuple[Pipeline, int]:
        """The pipeline (latest) and the version new items start on."""
        pipeline = self.pipeline(name)
        return pipeline, self._active_of(self.activation(name), pipeline.version)

    def pipeline_version(self, pipeline: Pipeline, version: int) -> Pipeline:
        if not 1 <= version <= pipeline.version:
            raise NotFound(f"no version {version} of pipeline {pipeline.name!r}")
        return pipeline if version == pipeline.version else self.pipeline(pipeline.name, version)

    def activate_version(
        self,
        name: str,
        version: int,
        *,
        expected_active: int,
        candidate: RunSummary | None,
        active_run: RunSummary | None,
        force: bool,
        by: By,
    ) -> tuple[int, int, bool]:
        """Make `version` the one new items start on, if the active version's eval gate lets
        it (judged on the runs given, read for `expected_active`) or `force`. Returns the
        active version, the position and whether anything changed."""

        def command() -> tuple[int, int, bool]:
            pipeline, current = self.active_version(name)
            self.pipeline_version(pipeline, version)
            if current != expected_active:
                raise ConcurrentUpdate(f"version {current} became active meanwhile; try again")
            gate = self.pipeline_version(pipeline, current).parsed.eval_gate
            activation = self.activation(name) or Activation.begin(name, by)
            changed = activation.activate(
                version, current, gate, candidate, active_run, force=force, by=by
            )
            if not changed:
                return current, self.position(), False
            return version, self._save(activation), True

        return self._retrying(command)

    # -- eval runs --------------------------------------------------------------------------------

    def start_eval(
        self,
        name: str,
        version: int,
        raw_cases: Any,
        *,
        topic: str,
        run_id: uuid.UUID,
        fingerprint: str,
        schema_problem: SchemaProblem,
        by: By,
        max_cases: int = MAX_CASES,
    ) -> tuple[EvalRun, int]:
        """Start an eval run: each case an eval item on `version`, all appended as one unit."""
        spec = self.pipeline_version(self.pipeline(name), version).parsed
        cases = parse_cases(raw_cases, spec.stage_names, schema_problem, max_cases=max_cases)
        run = EvalRun.start(run_id, name, version, topic, cases, fingerprint, by)
        items = [
            Item.start(
                case_item_id(run_id, index),
                NewItem(name, topic, f"eval: {case.name}", case.input, fingerprint),
                pipeline_version=version,
                spec=spec,
                by=by,
                eval=True,
            )
            for index, case in enumerate(cases)
        ]
        try:
            return run, self._save(run, *items)
        except ConcurrentUpdate:
            raise AlreadyExists(f"eval run {run_id} exists already") from None

    def eval_run(self, run_id: uuid.UUID) -> EvalRun:
        return self._get(EvalRun, run_id, f"eval run {run_id}")

    # -- topics ---------------------------------------------------------------------------------

    def put_topic(self, name: str, facts: TopicFacts, by: By) -> tuple[Topic, int]:
        return self._put(
            lambda: self._get(Topic, Topic.create_id(name), f"topic named {name!r}"),
            lambda: Topic.define(name, facts, by),
            lambda topic: topic.describe(facts, by),
        )

    # -- budgets --------------------------------------------------------------------------------

    def put_budget(self, scope: str, limits: Limits, by: By) -> tuple[Budget, int]:
        return self._put(
            lambda: self.budget(scope),
            lambda: Budget.define(scope, limits, by),
            lambda budget: budget.change_limits(limits, by),
        )

    def budget(self, scope: str) -> Budget:
        parse_scope(scope)
        return self._get(Budget, Budget.create_id(scope), f"budget for {scope!r}")

    def reset_breaker(self, scope: str, by: By) -> tuple[Budget, int]:
        return self._change(
            lambda: self.budget(scope),
            lambda budget: budget.reset(window_of(self.clock()), by),
        )

    def record_crossing(
        self, scope: str, window: str, spent_usd: Decimal, *, halted: bool, by: By
    ) -> list[Recorded]:
        """Record that spend crossed a scope's alert (and maybe halt) level in a window, once
        each; returns the events appended."""

        def command() -> list[Recorded]:
            budget = self.budget(scope)
            budget.alert(window, spent_usd, by)
            if halted:
                budget.open_breaker(window, spent_usd, by)
            recorded = [e for e in budget.pending_events if isinstance(e, Recorded)]
            if recorded:
                self._save(budget)
            return recorded

        return self._retrying(command)

    # -- items ----------------------------------------------------------------------------------

    def item(self, item_id: uuid.UUID, version: int | None = None) -> Item:
        return self._get(Item, item_id, f"item {item_id}", version=version)

    def create_item(
        self, new: NewItem, by: By, item_id: uuid.UUID | None = None
    ) -> tuple[Item, int]:
        pipeline, active = self.active_version(new.pipeline)
        item = Item.start(
            item_id or uuid.uuid4(),
            new,
            pipeline_version=active,
            spec=self.pipeline_version(pipeline, active).parsed,
            by=by,
        )
        return self._create(item, f"item {item.id} exists already")

    def claim(
        self,
        item_id: uuid.UUID,
        stage: str,
        claimant: Claimant,
        by: By,
        halted_topics: frozenset[str] = frozenset(),
        full_pipelines: frozenset[str] = frozenset(),
    ) -> tuple[Item, str, int]:
        """Claim one ready item. A rival claim that appended first makes this one fail at once.
        `halted_topics` names the topics whose breaker is open (and EVALS_HALTED when the
        `eval` scope's is)."""
        item = self.item(item_id)
        if item.topic in halted_topics:
            raise StateConflict(f"the breaker of topic:{item.topic} is open")
        if item.pipeline in full_pipelines:
            raise StateConflict(f"stage {stage!r} of {item.pipeline!r} is at its max_concurrent")
        if item.eval and EVALS_HALTED in halted_topics:
            raise StateConflict("the breaker of the eval scope is open")
        lease_id = item.claim(stage, claimant, self.clock(), by)
        return item, lease_id, self._save(item)

    def _on_lease(
        self, lease_id: str, change: Callable[[Item, datetime], None]
    ) -> tuple[Item, int]:
        """Run a lease holder's command on the lease's item. A concurrent append (the holder's
        own heartbeat, say) is retried, and so is an expiry seen on an item that has moved on
        since it was read: the holder never sees a refusal its own lease did not earn."""
        item_id = lease_item_id(lease_id)

        def command() -> tuple[Item, int]:
            item = self.item(item_id)
            now = self.clock()
            try:
                change(item, now)
            except LeaseTimedOut:
                if self.item(item_id).version != item.version:
                    raise ConcurrentUpdate from None
                raise
            self._decide_now(item, now)
            return item, self._save_if_changed(item)

        return self._retrying(command, attempts=LEASE_COMMAND_ATTEMPTS)

    def renew_lease(self, lease_id: str, claimant: Claimant, by: By) -> tuple[Item, int]:
        return self._on_lease(
            lease_id, lambda item, now: item.renew_lease(lease_id, claimant, now, by)
        )

    def complete_stage(
        self, lease_id: str, claimant: Claimant, completion: Completion, by: By
    ) -> tuple[Item, int]:
        return self._on_lease(
            lease_id,
            lambda item, now: item.complete_stage(lease_id, claimant, completion, now, by),
        )

    def fail_stage(
        self, lease_id: str, claimant: Claimant, failure: Failure, by: By
    ) -> tuple[Item, int]:
        return self._on_lease(
            lease_id, lambda item, now: item.fail_stage(lease_id, claimant, failure, now, by)
        )

    def expire_lease(self, item_id: uuid.UUID, by: By) -> tuple[Item, int]:
        def expire(item: Item) -> None:
            now = self.clock()
            item.expire_lease(now, by)
            self._decide_now(item, now)

        return self._change(lambda: self.item(item_id), expire)

    def revoke_lease(self, item_id: uuid.UUID, lease_id: str, by: By) -> tuple[Item, int]:
        """End a lease whose holder is disabled or no longer scoped to its stage, as the Agent
        aggregate says now (the read model that suggested it may lag)."""

        def revoke(item: Item) -> None:
            if item.agent is None or item.lease_id != lease_id:
                raise StateConflict(f"lease {lease_id} is not the item's current lease")
            try:
                holder = self.agent(item.agent)
            except NotFound:
                holder = None
            if holder is not None and holder.may_work_on(item.stage) and not holder.disabled:
                raise StateConflict(f"{item.agent!r} may still work on {item.stage!r}")
            why = "disabled" if holder is None or holder.disabled else "out of scope"
            item.revoke_lease(lease_id, f"{item.agent} is {why} for stage {item.stage!r}", by)
            self._decide_now(item, self.clock())

        return self._change(lambda: self.item(item_id), revoke)

    def retry_item(self, item_id: uuid.UUID, by: By) -> tuple[Item, int]:
        return self._change(lambda: self.item(item_id), lambda item: item.retry(by))

    def rewind_item(self, item_id: uuid.UUID, stage: str, reason: str, by: By) -> tuple[Item, int]:
        return self._change(lambda: self.item(item_id), lambda item: item.rewind(stage, reason, by))

    def fork_item(
        self,
        source_id: uuid.UUID,
        stage: str,
        by: By,
        *,
        pipeline_version: int | None = None,
        item_id: uuid.UUID | None = None,
        fingerprint: str = "",
    ) -> tuple[Item, int]:
        """A new item from `source_id`'s `stage` on, on the pipeline's active version (or the
        one given: an operator may rerun part of the work on a version not yet active),
        carrying the outputs of the stages before it."""
        source = self.item(source_id)
        latest, active = self.active_version(source.pipeline)
        version = active if pipeline_version is None else pipeline_version
        if not 1 <= version <= latest.version:
            raise NotFound(
                f"pipeline_version: pipeline {source.pipeline!r} has no version "
                f"{version}; its latest is {latest.version}"
            )
        pipeline = self.pipeline_version(latest, version)
        item = Item.fork(
            item_id or uuid.uuid4(),
            source,
            stage,
            pipeline_version=pipeline.version,
            spec=pipeline.parsed,
            fingerprint=fingerprint,
            by=by,
        )
        return self._create(item, f"item {item.id} exists already")

    def cancel_item(self, item_id: uuid.UUID, by: By) -> tuple[Item, int]:
        return self._change(lambda: self.item(item_id), lambda item: item.cancel(by))

    def resume_item(self, item_id: uuid.UUID, by: By) -> tuple[Item, int]:
        return self._change(lambda: self.item(item_id), lambda item: item.resume(by))

    # -- decisions ----------------------------------------------------------------------------------

    def item_as_reported(self, item_id: uuid.UUID, version: int) -> Item:
        """The item as the report at `version` left it: with the decision appended with it, if
        any (what a repeat of that report is answered with)."""
        # A decision may be more than one event: a park and the fallback that runs instead.
        following = list(self.events.get(item_id, gt=version, lte=version + 2))
        cause = trigger_name(item_id, version)
        decided = 0
        for answer in following:
            if not (isinstance(answer, Recorded) and answer.caused_by == cause):
                break
            decided += 1
        return self.item(item_id, version=version + decided)

    def _decide_now(self, item: Item, now: datetime) -> None:
        """Append the decision a lease's end calls for together with that end, when the item and
        its spec are all it needs (today: always), so the next stage is claimable the moment
        the report is durable. The bus then finds the trigger decided and moves past it; it
        decides what this does not (a log written before, or an app built without this)."""
        trigger = item.pending_events[-1] if item.pending_events else None
        if self.decide_at_once and isinstance(trigger, LeaseEnded):
            item.decide(trigger, now, trigger.answered_by())

    def decide(
        self, triggers: Sequence[tuple[LeaseEnded, By]], tracking: Tracking | None = None
    ) -> int | None:
        """Append the decisions the ends of leases call for, with the bus's tracking, as one
        unit: exactly once. Returns the position reached, or None when no trigger needs a
        decision (any more: decided already, or the item moved on)."""
        decided = []
        for trigger, by in triggers:
            try:
                item = self.item(trigger.originator_id)
            except NotFound:
                continue
            if item.decide(trigger, self.clock(), by):
                decided.append(item)
        if not decided:
            return None
        return self._save(*decided, tracking=tracking)
