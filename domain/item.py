"""The Item aggregate: one piece of work travelling a pipeline, stage by stage."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.domain import Aggregate

from domain import guards
from domain.errors import (
    InvalidCommand,
    LeaseLost,
    LeaseTimedOut,
    NotLeaseHolder,
    OutsideScope,
    RepeatedCompletion,
    ReportMismatch,
    StateConflict,
    UnknownStage,
)
from domain.pipeline import PipelineSpec, known_outcomes, parse_spec
from domain.recorded import Recorded, RecordedAggregate
from domain.values import By, Claimant, Completion, Failure, NewItem, Report


class Status:
    READY = "ready"
    CLAIMED = "claimed"
    ADVANCING = "advancing"
    DONE = "done"
    PARKED = "parked"
    HALTED = "halted"
    CANCELLED = "cancelled"

    FINAL = frozenset({DONE, CANCELLED})


# Who decides what follows a stage's end: the pipeline's rules, run by the service.
DECIDER = "system:bus"
EXPIRED = "expired"
REVOKED = "revoked"
STEP_VERBS = {
    guards.Advance: "advanced",
    guards.Complete: "completed",
    guards.Park: "parked",
    guards.Halt: "halted",
}


def fingerprinted(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """What a report's fingerprint covers: its kind and fields, but no model when it names none,
    so fingerprints taken before the model field existed still tell a repeat."""
    return {"kind": kind, **{k: v for k, v in fields.items() if k != "model" or v is not None}}


def report_fingerprint(report: dict[str, Any]) -> str:
    """A stable digest of a completion or failure report, to tell a repeat from a rival."""
    canonical = json.dumps(report, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- the kinds of item event; the events themselves are declared on Item -------------------------


def trigger_name(item_id: uuid.UUID, version: int) -> str:
    """How a decision appended with its trigger names it: `event:<item id>@<version>`."""
    return f"event:{item_id}@{version}"


class LeaseEvent(Recorded):
    """An event about one lease on one stage."""

    stage: str
    lease_id: str
    agent: str


class LeaseEnded(LeaseEvent):
    """A lease ended (done, failed or expired): the item waits for the bus to decide what next."""

    def apply(self, item: Item) -> None:
        item.finished_leases[self.lease_id] = (self.ending, self.originator_version)
        item.status = Status.ADVANCING
        item.lease_expires_at = None
        item.trigger_version = self.originator_version

    @property
    def ending(self) -> str:
        """What a later report on this lease is compared with."""
        return EXPIRED

    def answered_by(self) -> By:
        """Who decides on this trigger in the same append (the bus names triggers by position,
        unknown until the append; here the trigger is the item's version before the decision)."""
        return By(DECIDER, trigger_name(self.originator_id, self.originator_version))


class LeaseReported(LeaseEnded):
    """The lease's holder reported how the stage went, with what it cost.

    Version 2 added `model` (the model that did the work, when the agent says)."""

    class_version = 2

    cost_usd: Decimal
    tokens_in: int
    tokens_out: int
    duration_ms: int
    trace: Any
    model: str | None
    fingerprint: str
    at: datetime

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["model"] = None

    def apply(self, item: Item) -> None:
        super().apply(item)
        item.cost_usd += self.cost_usd
        item.tokens_in += self.tokens_in
        item.tokens_out += self.tokens_out

    @property
    def ending(self) -> str:
        return self.fingerprint

    @property
    def report(self) -> Report:
        return Report(
            self.cost_usd,
            self.tokens_in,
            self.tokens_out,
            self.duration_ms,
            self.trace,
            self.model,
        )


class ItemStopped(Recorded):
    """The item stopped moving: it is done, cancelled, parked or halted."""

    status: ClassVar[str]

    def apply(self, item: Item) -> None:
        item.status = self.status
        _drop_lease(item)
        item.trigger_version = None


def _drop_lease(item: Item) -> None:
    item.lease_id = None
    item.agent = None
    item.lease_expires_at = None


class Item(RecordedAggregate):
    """Owns where one piece of work stands. Every change is an event; nothing is inferred."""

    if TYPE_CHECKING:
        pipeline: str
        pipeline_version: int
        spec: dict[str, Any]
        topic: str
        title: str
        input: dict[str, Any]
        fingerprint: str
        created_by: str
        status: str
        stage: str
        visit: int
        attempt: int
        not_before: datetime | None
        lease_id: str | None
        agent: str | None
        lease_expires_at: datetime | None
        visits: dict[str, int]
        transitions: int
        outputs: dict[str, Any]
        cost_usd: Decimal
        tokens_in: int
        tokens_out: int
        finished_leases: dict[str, tuple[str, int]]
        lease_holders: dict[str, str]
        trigger_version: int | None
        path: list[str]
        resume_stage: str | None
        resume_reason: str
        forked_from: str | None
        eval: bool

    # -- events: each applies one fact to the state ------------------------------------------

    class ItemCreated(Aggregate.Created, Recorded):
        """Version 2 added `eval`: the item is a case of an eval run."""

        class_version = 2

        pipeline: str
        pipeline_version: int
        spec: dict[str, Any]
        topic: str
        title: str
        input: dict[str, Any]
        fingerprint: str
        eval: bool

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["eval"] = False  # items created before evals existed are production items

        def apply(self, item: Item) -> None:
            item.eval = self.eval
            item.pipeline = self.pipeline
            item.pipeline_version = self.pipeline_version
            item.spec = self.spec
            item.topic = self.topic
            item.title = self.title
            item.input = self.input
            item.fingerprint = self.fingerprint
            item.created_by = self.actor
            item.status = Status.READY
            item.stage = ""
            item.visit = 0
            item.attempt = 0
            item.not_before = None
            _drop_lease(item)
            item.visits = {}
            item.transitions = 0
            item.outputs = {}
            item.cost_usd = Decimal(0)
            item.tokens_in = 0
            item.tokens_out = 0
            item.finished_leases = {}
            item.lease_holders = {}
            item.trigger_version = None
            item.path = []
            item.resume_stage = None
            item.resume_reason = ""
            item.forked_from = None

    class ItemForked(Recorded):
        """The item began as a copy of another, from a stage on: what that one's earlier stages
        produced is this one's too."""

        forked_from: str
        from_version: int
        stage: str
        outputs: dict[str, Any]

        def apply(self, item: Item) -> None:
            item.forked_from = self.forked_from
            item.outputs = dict(self.outputs)

    class ItemRewound(Recorded):
        """An operator sent the item back to a stage it had reached: that stage runs again."""

        stage: str
        reason: str
        from_stage: str
        from_status: str

        def apply(self, item: Item) -> None:
            pass  # the StageReady recorded with it moves the item

    class StageReady(Recorded):
        stage: str
        visit: int
        attempt: int
        not_before: datetime | None
        reason: str

        def apply(self, item: Item) -> None:
            if self.visit != item.visits.get(self.stage, 0):
                item.path.append(self.stage)
                if item.stage:
                    item.transitions += 1
                item.visits[self.stage] = self.visit
            item.status = Status.READY
            item.stage = self.stage
            item.visit = self.visit
            item.attempt = self.attempt
            item.not_before = self.not_before
            _drop_lease(item)
            item.trigger_version = None

    class StageClaimed(LeaseEvent):
        attempt: int
        expires_at: datetime

        def apply(self, item: Item) -> None:
            item.status = Status.CLAIMED
            item.lease_holders[self.lease_id] = self.agent
            item.lease_id = self.lease_id
            item.agent = self.agent
            item.lease_expires_at = self.expires_at

    class LeaseRenewed(Recorded):
        lease_id: str
        expires_at: datetime

        def apply(self, item: Item) -> None:
            item.lease_expires_at = self.expires_at

    class StageCompleted(LeaseReported):
        outcome: str | None
        output: Any

        def apply(self, item: Item) -> None:
            item.outputs[self.stage] = self.output
            super().apply(item)

    class StageFailed(LeaseReported):
        error: str
        retryable: bool

    class LeaseExpired(LeaseEnded):
        pass

    class LeaseRevoked(LeaseEnded):
        """The holder lost the right to the stage (its scope changed, or it was disabled)."""

        reason: str

        @property
        def ending(self) -> str:
            return REVOKED

    class ItemParked(ItemStopped):
        status = Status.PARKED
        stage: str
        reason: str
        detail: str

    class ItemHalted(ItemStopped):
        status = Status.HALTED
        reason: str
        detail: str
        resume_stage: str | None
        resume_reason: str

        def apply(self, item: Item) -> None:
            item.resume_stage = self.resume_stage
            item.resume_reason = self.resume_reason
            super().apply(item)

    class ItemResumed(Recorded):
        pass

    class ItemCompleted(ItemStopped):
        status = Status.DONE

    class ItemCancelled(ItemStopped):
        status = Status.CANCELLED

    # -- creation ---------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        item_id: uuid.UUID,
        new: NewItem,
        *,
        pipeline_version: int,
        spec: PipelineSpec,
        by: By,
        eval: bool = False,
    ) -> Item:
        """Create the item and make its first stage ready, as one unit of change."""
        item = cls._begin(
            cls.ItemCreated,
            item_id,
            by,
            pipeline=new.pipeline,
            pipeline_version=pipeline_version,
            spec=spec.to_dict(),
            topic=new.topic,
            title=new.title,
            input=new.input,
            fingerprint=new.fingerprint,
            eval=eval,
        )
        item._ready(spec.first_stage, visit=1, attempt=1, reason="created", by=by)
        return item

    @classmethod
    def fork(
        cls,
        item_id: uuid.UUID,
        source: Item,
        stage: str,
        *,
        pipeline_version: int,
        spec: PipelineSpec,
        fingerprint: str,
        by: By,
    ) -> Item:
        """A new item on `spec`, ready at `stage`, with the outputs the source's stages before
        it produced (as `spec` orders its stages)."""
        names = spec.stage_names
        if stage not in names:
            raise UnknownStage(
                f"stage: pipeline {source.pipeline!r} version {pipeline_version} has no stage "
                f"{stage!r}; it has {', '.join(names)}"
            )
        earlier = names[: names.index(stage)]
        item = cls._begin(
            cls.ItemCreated,
            item_id,
            by,
            pipeline=source.pipeline,
            pipeline_version=pipeline_version,
            spec=spec.to_dict(),
            topic=source.topic,
            title=source.title,
            input=source.input,
            fingerprint=fingerprint,
            # A fork of an eval case stays out of production spend and reports, as its source.
            eval=source.eval,
        )
        item._record(
            Item.ItemForked,
            by,
            forked_from=str(source.id),
            from_version=source.version,
            stage=stage,
            outputs={name: source.outputs[name] for name in earlier if name in source.outputs},
        )
        item._ready(stage, visit=1, attempt=1, reason="forked", by=by)
        return item

    @property
    def parsed_spec(self) -> PipelineSpec:
        return parse_spec(self.spec)

    @property
    def is_final(self) -> bool:
        return self.status in Status.FINAL

    # -- agents' commands ---------------------------------------------------------------------------

    def claim(self, stage: str, claimant: Claimant, now: datetime, by: By) -> str:
        if stage not in claimant.stages:
            raise OutsideScope(f"stage {stage!r} is outside the scope of {claimant.name!r}")
        if self.status != Status.READY or self.stage != stage:
            raise StateConflict(
                f"item is {self.status} at stage {self.stage!r}, not ready at {stage!r}"
            )
        if self.not_before is not None and self.not_before > now:
            raise StateConflict(
                f"stage {stage!r} is not ready before {self.not_before.isoformat()}"
            )
        lease_id = self.id.hex + uuid.uuid4().hex[:16]
        self._record(
            Item.StageClaimed,
            by,
            stage=stage,
            lease_id=lease_id,
            agent=claimant.name,
            attempt=self.attempt,
            expires_at=self._lease_end(now),
        )
        return lease_id

    def renew_lease(self, lease_id: str, claimant: Claimant, now: datetime, by: By) -> None:
        self._check_holder(lease_id, claimant)
        self._check_not_finished(lease_id, fingerprint=None)
        self._check_lease_held(lease_id, claimant, now)
        self._record(Item.LeaseRenewed, by, lease_id=lease_id, expires_at=self._lease_end(now))

    def complete_stage(
        self, lease_id: str, claimant: Claimant, completion: Completion, now: datetime, by: By
    ) -> None:
        self._end_lease(Item.StageCompleted, lease_id, claimant, completion, now, by)

    def fail_stage(
        self, lease_id: str, claimant: Claimant, failure: Failure, now: datetime, by: By
    ) -> None:
        self._end_lease(Item.StageFailed, lease_id, claimant, failure, now, by)

    def _end_lease(
        self,
        event_class: type[LeaseReported],
        lease_id: str,
        claimant: Claimant,
        result: Completion | Failure,
        now: datetime,
        by: By,
    ) -> None:
        """The holder's report ends its lease; an identical repeat is told apart from a rival.
        A lease and its reports belong to its holder, before and after it finishes."""
        fields = result.fields()
        fingerprint = report_fingerprint(fingerprinted(result.kind, fields))
        self._check_holder(lease_id, claimant)
        self._check_not_finished(lease_id, fingerprint)
        self._check_lease_held(lease_id, claimant, now)
        if isinstance(result, Completion):
            self._check_outcome(result.outcome)
        self._record(
            event_class,
            by,
            stage=self.stage,
            lease_id=lease_id,
            agent=claimant.name,
            fingerprint=fingerprint,
            at=now,
            **fields,
        )

    def expire_lease(self, now: datetime, by: By) -> None:
        if self.status != Status.CLAIMED or self.lease_expires_at is None:
            raise StateConflict(f"item is {self.status}: no lease to expire")
        if self.lease_expires_at > now:
            raise StateConflict(f"lease runs until {self.lease_expires_at.isoformat()}")
        self._record(
            Item.LeaseExpired, by, stage=self.stage, lease_id=self.lease_id, agent=self.agent
        )

    def revoke_lease(self, lease_id: str, reason: str, by: By) -> None:
        """End a lease its holder may no longer hold; the bus then makes the stage ready again."""
        if self.status != Status.CLAIMED or self.lease_id != lease_id:
            raise StateConflict(f"lease {lease_id} is not the item's current lease")
        self._record(
            Item.LeaseRevoked,
            by,
            stage=self.stage,
            lease_id=lease_id,
            agent=self.agent,
            reason=reason,
        )

    # -- the bus's decisions ------------------------------------------------------------------------

    def awaits_decision_on(self, version: int) -> bool:
        """True while the event at `version` is the trigger the bus has still to decide on."""
        return self.status == Status.ADVANCING and self.trigger_version == version

    def decide(self, trigger: LeaseEnded, now: datetime, by: By) -> bool:
        """Carry out what the spec says follows the trigger; False when the trigger needs no
        decision any more (decided already, or the item moved on)."""
        if not self.awaits_decision_on(trigger.originator_version):
            return False
        self.carry_out(self.next_step(trigger, now), by)
        return True

    def next_step(self, trigger: LeaseEnded, now: datetime) -> guards.Step:
        """What the pure guards decide after a completion, a failure or an expired lease."""
        spec = self.parsed_spec
        decision: guards.Decision
        if isinstance(trigger, Item.StageCompleted):
            decision = guards.after_completion(
                spec, self.stage, trigger.outcome, self.visits, self.transitions, self.path
            )
        elif isinstance(trigger, Item.LeaseRevoked):
            decision = guards.after_revocation(self.stage)
        else:
            failed = trigger if isinstance(trigger, Item.StageFailed) else None
            decision = guards.after_failure(
                spec,
                self.stage,
                self.attempt,
                retryable=failed.retryable if failed else True,
                error=failed.error if failed else "the lease expired",
                failed_at=now,
            )
        return guards.within_item_budget(spec, self.cost_usd, decision)

    def carry_out(self, step: guards.Step, by: By) -> None:
        """Record a decision: the next stage (or a retry) ready, completion, parking or a halt."""
        if self.status != Status.ADVANCING:
            raise StateConflict(
                f"item is {self.status}: there is no decision to make, "
                f"so it cannot be {STEP_VERBS[type(step)]}"
            )
        if isinstance(step, guards.Halt):
            then = step.then
            self._record(
                Item.ItemHalted,
                by,
                reason=step.reason,
                detail=step.detail,
                resume_stage=then.stage if isinstance(then, guards.Advance) else None,
                resume_reason=then.reason if isinstance(then, guards.Advance) else "completed",
            )
        elif isinstance(step, guards.Complete):
            self._record(Item.ItemCompleted, by)
        elif isinstance(step, guards.Park):
            self._record(
                Item.ItemParked, by, stage=self.stage, reason=step.reason, detail=step.detail
            )
            instead = guards.fallback(
                self.parsed_spec, self.stage, self.visits, self.transitions, self.path
            )
            if instead is not None:
                self._advance(instead.stage, instead.reason, by, retry=False)
        else:
            self._advance(
                step.stage,
                step.reason,
                by,
                retry=step.reason == "retry",
                not_before=step.not_before,
            )

    # -- operators' commands --------------------------------------------------------------------------

    def retry(self, by: By) -> None:
        """Un-park: the stage it stopped at is ready again, with its attempts reset."""
        if self.status != Status.PARKED:
            raise StateConflict(f"only a parked item can be retried; this one is {self.status}")
        self._ready(self.stage, visit=self.visit, attempt=1, reason="manual", by=by)

    def resume(self, by: By) -> None:
        """Carry on where the halt stopped the item: the next stage, a retry, or completion."""
        if self.status != Status.HALTED:
            raise StateConflict(f"only a halted item can be resumed; this one is {self.status}")
        stage, retry = self.resume_stage, self.resume_reason == "retry"
        self._record(Item.ItemResumed, by)
        if stage is None:
            self._record(Item.ItemCompleted, by)
        else:
            self._advance(stage, "manual", by, retry=retry)

    def rewind(self, stage: str, reason: str, by: By) -> None:
        """Make a stage the item reached before ready again — a done item too. It is a new
        visit and a transition, so the loop guard still counts it."""
        spec = self.parsed_spec
        if stage not in spec.stage_names:
            raise UnknownStage(
                f"stage: pipeline {self.pipeline!r} version {self.pipeline_version} has no stage "
                f"{stage!r}; it has {', '.join(spec.stage_names)}"
            )
        if self.status in (Status.CLAIMED, Status.ADVANCING, Status.CANCELLED):
            raise StateConflict(f"item is {self.status}: it cannot be rewound now")
        if stage not in self.visits:
            raise StateConflict(f"item never reached stage {stage!r}: there is nothing to rewind")
        refused = guards.loop_guard(spec, stage, self.visits, self.transitions, self.path)
        if refused is not None:
            raise StateConflict(f"the loop guard refuses the rewind: {refused.detail}")
        self._record(
            Item.ItemRewound,
            by,
            stage=stage,
            reason=reason,
            from_stage=self.stage,
            from_status=self.status,
        )
        self._advance(stage, "rewound", by, retry=False)

    def cancel(self, by: By) -> None:
        if self.is_final:
            raise StateConflict(f"item is {self.status} already")
        self._record(Item.ItemCancelled, by)

    # -- helpers --------------------------------------------------------------------------------------

    def _advance(
        self, stage: str, reason: str, by: By, *, retry: bool, not_before: datetime | None = None
    ) -> None:
        """Make `stage` ready: a retry keeps the visit and counts an attempt; anything else is a
        new visit, attempt 1."""
        self._ready(
            stage,
            visit=self.visit if retry else self.visits.get(stage, 0) + 1,
            attempt=self.attempt + 1 if retry else 1,
            reason=reason,
            by=by,
            not_before=not_before,
        )

    def _ready(
        self,
        stage: str,
        *,
        visit: int,
        attempt: int,
        reason: str,
        by: By,
        not_before: datetime | None = None,
    ) -> None:
        self._record(
            Item.StageReady,
            by,
            stage=stage,
            visit=visit,
            attempt=attempt,
            not_before=not_before,
            reason=reason,
        )

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.parsed_spec.stage(self.stage).lease_seconds)

    def _check_outcome(self, outcome: str | None) -> None:
        outcomes = known_outcomes(self.parsed_spec, self.stage)
        if outcome is not None and outcome not in outcomes:
            raise InvalidCommand(
                f"stage {self.stage!r} knows the outcomes {', '.join(outcomes)}, not {outcome!r}"
            )

    def _check_holder(self, lease_id: str, claimant: Claimant) -> None:
        holder = self.lease_holders.get(lease_id)
        if holder is None:
            raise LeaseLost("the item never gave out this lease")
        if holder != claimant.name:
            raise NotLeaseHolder("the lease belongs to another agent")

    def _check_not_finished(self, lease_id: str, fingerprint: str | None) -> None:
        """A finished lease answers an identical report again and refuses anything else."""
        finished = self.finished_leases.get(lease_id)
        if finished is None:
            return
        ending, version = finished
        if ending == EXPIRED:
            raise LeaseLost("the lease expired before this report")
        if ending == REVOKED:
            raise LeaseLost("the lease was revoked: its stage is no longer in its holder's scope")
        if ending == fingerprint:
            raise RepeatedCompletion(version)
        if fingerprint is None:
            raise LeaseLost("the lease is finished")
        raise ReportMismatch("this lease was already finished with a different report")

    def _check_lease_held(self, lease_id: str, claimant: Claimant, now: datetime) -> None:
        if self.status != Status.CLAIMED or self.lease_id != lease_id:
            raise LeaseLost("the lease is not the item's current lease")
        if self.stage not in claimant.stages:
            raise OutsideScope(
                f"stage {self.stage!r} is no longer in the scope of {claimant.name!r}"
            )
        if self.lease_expires_at is not None and self.lease_expires_at <= now:
            raise LeaseTimedOut(f"the lease expired at {self.lease_expires_at.isoformat()}")
