"""The application service: loads aggregates, runs their commands, appends what they decided."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Recording, Tracking

from domain import guards
from domain.agent import Agent
from domain.budget import Budget, parse_scope
from domain.errors import AlreadyExists, ConcurrentUpdate, NotFound, StateConflict
from domain.guards import window_of
from domain.item import Item
from domain.pipeline import Pipeline, parse_spec
from domain.topic import Topic

T = TypeVar("T")

COMMAND_ATTEMPTS = 5


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
        self, env: dict[str, str] | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        super().__init__(env)
        self.clock = clock
        # Told (stage, item id) once a stage is claimable now, so waiting claims can wake at once.
        self.ready_listeners: list[Callable[[str, uuid.UUID], None]] = []

    def construct_recorder(self) -> ProcessRecorder:
        # A process recorder lets the bus append its decision and its tracking in one transaction.
        return self.factory.process_recorder()

    # -- plumbing ---------------------------------------------------------------------------

    def _get(self, cls: type[T], aggregate_id: uuid.UUID, what: str) -> T:
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no {what}") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"no {what}")
        return aggregate

    def _append(self, *aggregates: Aggregate, tracking: Tracking | None = None) -> int:
        """Append every pending event of the aggregates in one transaction; return the position."""
        processing_event = ProcessingEvent[uuid.UUID](tracking=tracking)
        processing_event.collect_events(*aggregates)
        recordings: list[Recording[uuid.UUID]] = self._record(processing_event)
        self._notify(recordings)
        new_events: list[Any] = list(processing_event.events)
        for new_event in new_events:
            if type(new_event).__name__ == "StageReady" and new_event.not_before is None:
                for listener in self.ready_listeners:
                    listener(new_event.stage, new_event.originator_id)
        return max((r.notification.id for r in recordings), default=0)

    @contextmanager
    def _conflicts_as_concurrent_update(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError as error:
            raise ConcurrentUpdate(str(error)) from error

    def _retrying(self, command: Callable[[], T]) -> T:
        """Run a load-decide-append command again when another writer appended first."""
        for _ in range(COMMAND_ATTEMPTS - 1):
            try:
                with self._conflicts_as_concurrent_update():
                    return command()
            except ConcurrentUpdate:
                continue
        with self._conflicts_as_concurrent_update():
            return command()

    def position(self) -> int:
        return self.recorder.max_notification_id() or 0

    # -- agents -------------------------------------------------------------------------------

    def register_agent(
        self,
        *,
        name: str,
        role: str,
        stages: list[str],
        token_hash: str,
        request_digest: str,
        actor: str,
        caused_by: str,
    ) -> tuple[Agent, int]:
        agent = Agent(
            name=name,
            role=role,
            stages=stages,
            token_hash=token_hash,
            request_digest=request_digest,
            actor=actor,
            caused_by=caused_by,
        )
        try:
            return agent, self._append(agent)
        except IntegrityError:
            raise AlreadyExists(f"an agent named {name!r} exists already") from None

    def agent(self, name: str) -> Agent:
        return self._get(Agent, Agent.create_id(name), f"agent named {name!r}")

    def agent_by_id(self, agent_id: uuid.UUID) -> Agent:
        return self._get(Agent, agent_id, "such agent")

    def disable_agent(self, name: str, *, actor: str, caused_by: str) -> tuple[Agent, int]:
        def command() -> tuple[Agent, int]:
            agent = self.agent(name)
            agent.disable(actor=actor, caused_by=caused_by)
            return agent, self._append(agent)

        return self._retrying(command)

    def rotate_token(
        self, name: str, *, token_hash: str, actor: str, caused_by: str
    ) -> tuple[Agent, int]:
        def command() -> tuple[Agent, int]:
            agent = self.agent(name)
            agent.rotate_token(token_hash=token_hash, actor=actor, caused_by=caused_by)
            return agent, self._append(agent)

        return self._retrying(command)

    def change_stages(
        self, name: str, *, stages: list[str], actor: str, caused_by: str
    ) -> tuple[Agent, int]:
        def command() -> tuple[Agent, int]:
            agent = self.agent(name)
            if not agent.change_stages(stages=stages, actor=actor, caused_by=caused_by):
                return agent, self.position()
            return agent, self._append(agent)

        return self._retrying(command)

    # -- pipelines ----------------------------------------------------------------------------

    def put_pipeline(
        self, name: str, raw_spec: Any, *, actor: str, caused_by: str
    ) -> tuple[Pipeline, int]:
        spec = parse_spec(raw_spec).to_dict()

        def command() -> tuple[Pipeline, int]:
            try:
                pipeline = self.pipeline(name)
            except NotFound:
                pipeline = Pipeline(name=name, spec=spec, actor=actor, caused_by=caused_by)
            else:
                pipeline.revise(spec=spec, actor=actor, caused_by=caused_by)
            return pipeline, self._append(pipeline)

        return self._retrying(command)

    def pipeline(self, name: str, version: int | None = None) -> Pipeline:
        try:
            pipeline: object = self.repository.get(Pipeline.create_id(name), version=version)
        except AggregateNotFoundError:
            raise NotFound(f"no pipeline named {name!r}") from None
        assert isinstance(pipeline, Pipeline)
        return pipeline

    # -- topics ---------------------------------------------------------------------------------

    def put_topic(
        self,
        name: str,
        *,
        owner: str | None,
        priority: int,
        tags: list[str],
        metadata: dict[str, Any],
        actor: str,
        caused_by: str,
    ) -> tuple[Topic, int]:
        def command() -> tuple[Topic, int]:
            try:
                topic = self._get(Topic, Topic.create_id(name), f"topic named {name!r}")
            except NotFound:
                topic = Topic(
                    name=name,
                    owner=owner,
                    priority=priority,
                    tags=tags,
                    metadata=metadata,
                    actor=actor,
                    caused_by=caused_by,
                )
            else:
                changed = topic.describe(
                    owner=owner,
                    priority=priority,
                    tags=tags,
                    metadata=metadata,
                    actor=actor,
                    caused_by=caused_by,
                )
                if not changed:
                    return topic, self.position()
            return topic, self._append(topic)

        return self._retrying(command)

    # -- budgets --------------------------------------------------------------------------------

    def put_budget(
        self, scope: str, *, alert_usd: Decimal, halt_usd: Decimal, actor: str, caused_by: str
    ) -> tuple[Budget, int]:
        def command() -> tuple[Budget, int]:
            try:
                budget = self.budget(scope)
            except NotFound:
                budget = Budget(
                    scope=scope,
                    alert_usd=alert_usd,
                    halt_usd=halt_usd,
                    actor=actor,
                    caused_by=caused_by,
                )
            else:
                if not budget.change_limits(
                    alert_usd=alert_usd, halt_usd=halt_usd, actor=actor, caused_by=caused_by
                ):
                    return budget, self.position()
            return budget, self._append(budget)

        return self._retrying(command)

    def budget(self, scope: str) -> Budget:
        parse_scope(scope)
        return self._get(Budget, Budget.create_id(scope), f"budget for {scope!r}")

    def reset_breaker(self, scope: str, *, actor: str, caused_by: str) -> tuple[Budget, int]:
        def command() -> tuple[Budget, int]:
            budget = self.budget(scope)
            budget.reset(window=window_of(self.clock()), actor=actor, caused_by=caused_by)
            return budget, self._append(budget)

        return self._retrying(command)

    def record_crossing(
        self,
        scope: str,
        *,
        window: str,
        spent_usd: Decimal,
        halted: bool,
        actor: str,
        caused_by: str,
    ) -> list[str]:
        """Record that spend crossed a scope's alert (and maybe halt) level in a window, once
        each; returns the names of the events appended."""

        def command() -> list[str]:
            budget = self.budget(scope)
            budget.alert(window=window, spent_usd=spent_usd, actor=actor, caused_by=caused_by)
            if halted:
                budget.open_breaker(
                    window=window, spent_usd=spent_usd, actor=actor, caused_by=caused_by
                )
            names = [type(e).__name__ for e in budget.pending_events]
            if names:
                self._append(budget)
            return names

        return self._retrying(command)

    # -- items ----------------------------------------------------------------------------------

    def item(self, item_id: uuid.UUID, version: int | None = None) -> Item:
        try:
            item: object = self.repository.get(item_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(f"no item {item_id}") from None
        if not isinstance(item, Item):
            raise NotFound(f"no item {item_id}")
        return item

    def create_item(
        self,
        *,
        pipeline: str,
        topic: str,
        title: str,
        input: dict[str, Any],
        fingerprint: str,
        actor: str,
        caused_by: str,
        item_id: uuid.UUID | None = None,
    ) -> tuple[Item, int]:
        spec_holder = self.pipeline(pipeline)
        item = Item.start(
            item_id=item_id,
            pipeline=pipeline,
            pipeline_version=spec_holder.version,
            spec=spec_holder.parsed,
            topic=topic,
            title=title,
            input=input,
            fingerprint=fingerprint,
            actor=actor,
            caused_by=caused_by,
        )
        try:
            return item, self._append(item)
        except IntegrityError:
            raise AlreadyExists(f"item {item.id} exists already") from None

    def claim(
        self,
        item_id: uuid.UUID,
        *,
        stage: str,
        agent: str,
        actor: str,
        caused_by: str,
        halted_topics: frozenset[str] = frozenset(),
    ) -> tuple[Item, str, int]:
        """Claim one ready item. A rival claim that appended first makes this one fail at once."""
        item = self.item(item_id)
        if item.topic in halted_topics:
            raise StateConflict(f"the breaker of topic:{item.topic} is open")
        lease_id = item.claim(
            stage=stage, agent=agent, now=self.clock(), actor=actor, caused_by=caused_by
        )
        with self._conflicts_as_concurrent_update():
            position = self._append(item)
        return item, lease_id, position

    def _on_lease(
        self, lease_id: str, change: Callable[[Item, datetime], None]
    ) -> tuple[Item, int]:
        """Run a lease holder's command on the lease's item, retried on a concurrent append."""

        def command() -> tuple[Item, int]:
            item = self.item(lease_item_id(lease_id))
            change(item, self.clock())
            return item, self._append(item)

        return self._retrying(command)

    def renew_lease(
        self, lease_id: str, *, agent: str, actor: str, caused_by: str
    ) -> tuple[Item, int]:
        return self._on_lease(
            lease_id,
            lambda item, now: item.renew_lease(
                lease_id=lease_id, agent=agent, now=now, actor=actor, caused_by=caused_by
            ),
        )

    def complete_stage(
        self,
        lease_id: str,
        *,
        agent: str,
        outcome: str | None,
        output: Any,
        cost_usd: Decimal,
        tokens_in: int,
        tokens_out: int,
        duration_ms: int,
        trace: Any,
        actor: str,
        caused_by: str,
    ) -> tuple[Item, int]:
        return self._on_lease(
            lease_id,
            lambda item, now: item.complete_stage(
                lease_id=lease_id,
                agent=agent,
                now=now,
                outcome=outcome,
                output=output,
                cost_usd=cost_usd,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                duration_ms=duration_ms,
                trace=trace,
                actor=actor,
                caused_by=caused_by,
            ),
        )

    def fail_stage(
        self,
        lease_id: str,
        *,
        agent: str,
        error: str,
        retryable: bool,
        cost_usd: Decimal,
        tokens_in: int,
        tokens_out: int,
        duration_ms: int,
        trace: Any,
        actor: str,
        caused_by: str,
    ) -> tuple[Item, int]:
        return self._on_lease(
            lease_id,
            lambda item, now: item.fail_stage(
                lease_id=lease_id,
                agent=agent,
                now=now,
                error=error,
                retryable=retryable,
                cost_usd=cost_usd,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                duration_ms=duration_ms,
                trace=trace,
                actor=actor,
                caused_by=caused_by,
            ),
        )

    def expire_lease(self, item_id: uuid.UUID, *, actor: str, caused_by: str) -> tuple[Item, int]:
        return self._operate(
            item_id,
            lambda item: item.expire_lease(now=self.clock(), actor=actor, caused_by=caused_by),
        )

    def retry_item(self, item_id: uuid.UUID, *, actor: str, caused_by: str) -> tuple[Item, int]:
        return self._operate(item_id, lambda item: item.retry(actor=actor, caused_by=caused_by))

    def cancel_item(self, item_id: uuid.UUID, *, actor: str, caused_by: str) -> tuple[Item, int]:
        return self._operate(item_id, lambda item: item.cancel(actor=actor, caused_by=caused_by))

    def resume_item(self, item_id: uuid.UUID, *, actor: str, caused_by: str) -> tuple[Item, int]:
        return self._operate(item_id, lambda item: item.resume(actor=actor, caused_by=caused_by))

    def _operate(self, item_id: uuid.UUID, change: Callable[[Item], None]) -> tuple[Item, int]:
        def command() -> tuple[Item, int]:
            item = self.item(item_id)
            change(item)
            return item, self._append(item)

        return self._retrying(command)

    # -- the bus's decision point ------------------------------------------------------------------

    def decide(
        self,
        item_id: uuid.UUID,
        trigger_version: int,
        trigger: Any,
        *,
        tracking: Tracking | None,
        actor: str,
        caused_by: str | None = None,
    ) -> int | None:
        """Append the decision a stage's end calls for, with the bus's tracking, exactly once.

        Returns the position reached, or None when the trigger needs no decision (any more).
        """
        item = self.item(item_id)
        if not self.apply_decision(
            item, trigger_version, trigger, actor=actor, caused_by=caused_by
        ):
            return None
        return self._append(item, tracking=tracking)

    def decide_together(self, items: list[Item], *, tracking: Tracking) -> int:
        """Append the decisions already applied to several items, and the tracking, as one unit."""
        return self._append(*items, tracking=tracking)

    def apply_decision(
        self, item: Item, trigger_version: int, trigger: Any, *, actor: str, caused_by: str | None
    ) -> bool:
        """Apply to `item` (not yet appended) the decision its trigger calls for; False when the
        trigger needs no decision any more (decided already, or the item moved on)."""
        if not item.awaits_decision_on(trigger_version):
            return False
        caused_by = caused_by or f"{item.id}@{trigger_version}"
        spec = item.parsed_spec
        trigger_type = type(trigger).__name__
        if trigger_type == "StageCompleted":
            decision = guards.after_completion(
                spec, item.stage, trigger.outcome, item.visits, item.transitions, item.path
            )
        elif trigger_type in ("StageFailed", "LeaseExpired"):
            expired = trigger_type == "LeaseExpired"
            decision = guards.after_failure(
                spec,
                item.stage,
                item.attempt,
                retryable=True if expired else trigger.retryable,
                error="the lease expired" if expired else trigger.error,
                failed_at=self.clock(),
            )
        else:
            raise StateConflict(f"{trigger_type} calls for no decision")
        guarded = guards.within_item_budget(spec, item.cost_usd, decision)
        if isinstance(guarded, guards.Halt):
            then = guarded.then
            item.halt(
                reason=guarded.reason,
                detail=guarded.detail,
                resume_stage=then.stage if isinstance(then, guards.Advance) else None,
                resume_reason=then.reason if isinstance(then, guards.Advance) else "completed",
                actor=actor,
                caused_by=caused_by,
            )
        elif isinstance(decision, guards.Complete):
            item.finish(actor=actor, caused_by=caused_by)
        elif isinstance(decision, guards.Park):
            item.park(
                reason=decision.reason, detail=decision.detail, actor=actor, caused_by=caused_by
            )
        else:
            item.advance_to(
                stage=decision.stage,
                not_before=decision.not_before,
                reason=decision.reason,
                actor=actor,
                caused_by=caused_by,
            )
        return True
