"""The Item aggregate: one piece of work travelling a pipeline, stage by stage."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import (
    InvalidCommand,
    LeaseLost,
    NotLeaseHolder,
    RepeatedCompletion,
    ReportMismatch,
    StateConflict,
)
from domain.pipeline import PipelineSpec, known_outcomes, parse_spec


class Status:
    READY = "ready"
    CLAIMED = "claimed"
    ADVANCING = "advancing"
    DONE = "done"
    PARKED = "parked"
    HALTED = "halted"
    CANCELLED = "cancelled"

    FINAL = frozenset({DONE, CANCELLED})


EXPIRED = "expired"


def report_fingerprint(report: dict[str, Any]) -> str:
    """A stable digest of a completion or failure report, to tell a repeat from a rival."""
    canonical = json.dumps(report, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Item(Aggregate):
    """Owns where one piece of work stands. Every change is an event; nothing is inferred."""

    @event("ItemCreated")
    def __init__(
        self,
        *,
        id: uuid.UUID,
        pipeline: str,
        pipeline_version: int,
        spec: dict[str, Any],
        topic: str,
        title: str,
        input: dict[str, Any],
        fingerprint: str,
        actor: str,
        caused_by: str,
    ) -> None:
        self.pipeline = pipeline
        self.pipeline_version = pipeline_version
        self.spec = spec
        self.topic = topic
        self.title = title
        self.input = input
        self.fingerprint = fingerprint
        self.created_by = actor
        self.status = Status.READY
        self.stage = ""
        self.visit = 0
        self.attempt = 0
        self.not_before: datetime | None = None
        self.lease_id: str | None = None
        self.agent: str | None = None
        self.lease_expires_at: datetime | None = None
        self.visits: dict[str, int] = {}
        self.transitions = 0
        self.outputs: dict[str, Any] = {}
        self.cost_usd = Decimal(0)
        self.tokens_in = 0
        self.tokens_out = 0
        self.finished_leases: dict[str, tuple[str, int]] = {}
        self.trigger_version: int | None = None
        self.path: list[str] = []
        self.resume_stage: str | None = None
        self.resume_reason = ""

    @classmethod
    def start(
        cls,
        *,
        item_id: uuid.UUID | None,
        pipeline: str,
        pipeline_version: int,
        spec: PipelineSpec,
        topic: str,
        title: str,
        input: dict[str, Any],
        fingerprint: str,
        actor: str,
        caused_by: str,
    ) -> Item:
        """Create the item and make its first stage ready, as one unit of change."""
        item = cls(
            id=item_id or uuid.uuid4(),
            pipeline=pipeline,
            pipeline_version=pipeline_version,
            spec=spec.to_dict(),
            topic=topic,
            title=title,
            input=input,
            fingerprint=fingerprint,
            actor=actor,
            caused_by=caused_by,
        )
        item._make_ready(
            stage=spec.first_stage,
            visit=1,
            attempt=1,
            not_before=None,
            reason="created",
            actor=actor,
            caused_by=caused_by,
        )
        return item

    @property
    def parsed_spec(self) -> PipelineSpec:
        return parse_spec(self.spec)

    @property
    def is_final(self) -> bool:
        return self.status in Status.FINAL

    # -- agents' commands ---------------------------------------------------------------

    def claim(self, *, stage: str, agent: str, now: datetime, actor: str, caused_by: str) -> str:
        if self.status != Status.READY or self.stage != stage:
            raise StateConflict(
                f"item is {self.status} at stage {self.stage!r}, not ready at {stage!r}"
            )
        if self.not_before is not None and self.not_before > now:
            raise StateConflict(
                f"stage {stage!r} is not ready before {self.not_before.isoformat()}"
            )
        lease_seconds = self.parsed_spec.stage(stage).lease_seconds
        lease_id = self.id.hex + uuid.uuid4().hex[:16]
        self._claimed(
            stage=stage,
            lease_id=lease_id,
            agent=agent,
            attempt=self.attempt,
            expires_at=now + timedelta(seconds=lease_seconds),
            actor=actor,
            caused_by=caused_by,
        )
        return lease_id

    def renew_lease(
        self, *, lease_id: str, agent: str, now: datetime, actor: str, caused_by: str
    ) -> None:
        self._check_lease_held(lease_id, agent, now)
        lease_seconds = self.parsed_spec.stage(self.stage).lease_seconds
        self._lease_renewed(
            lease_id=lease_id,
            expires_at=now + timedelta(seconds=lease_seconds),
            actor=actor,
            caused_by=caused_by,
        )

    def complete_stage(
        self,
        *,
        lease_id: str,
        agent: str,
        now: datetime,
        outcome: str | None,
        output: Any,
        cost_usd: Decimal,
        tokens_in: int,
        tokens_out: int,
        duration_ms: int,
        trace: Any,
        actor: str,
        caused_by: str,
    ) -> None:
        report = {
            "kind": "completed",
            "outcome": outcome,
            "output": output,
            "cost_usd": cost_usd,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "duration_ms": duration_ms,
            "trace": trace,
        }
        fingerprint = report_fingerprint(report)
        self._check_not_finished(lease_id, fingerprint)
        self._check_lease_held(lease_id, agent, now)
        if outcome is not None and outcome not in known_outcomes(self.parsed_spec, self.stage):
            raise InvalidCommand(
                f"stage {self.stage!r} knows the outcomes "
                f"{', '.join(known_outcomes(self.parsed_spec, self.stage))}, not {outcome!r}"
            )
        self._stage_completed(
            stage=self.stage,
            lease_id=lease_id,
            agent=agent,
            outcome=outcome,
            output=output,
            cost_usd=cost_usd,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            duration_ms=duration_ms,
            trace=trace,
            fingerprint=fingerprint,
            at=now,
            actor=actor,
            caused_by=caused_by,
        )

    def fail_stage(
        self,
        *,
        lease_id: str,
        agent: str,
        now: datetime,
        error: str,
        retryable: bool,
        cost_usd: Decimal,
        tokens_in: int,
        tokens_out: int,
        duration_ms: int,
        trace: Any,
        actor: str,
        caused_by: str,
    ) -> None:
        report = {
            "kind": "failed",
            "error": error,
            "retryable": retryable,
            "cost_usd": cost_usd,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "duration_ms": duration_ms,
            "trace": trace,
        }
        fingerprint = report_fingerprint(report)
        self._check_not_finished(lease_id, fingerprint)
        self._check_lease_held(lease_id, agent, now)
        self._stage_failed(
            stage=self.stage,
            lease_id=lease_id,
            agent=agent,
            error=error,
            retryable=retryable,
            cost_usd=cost_usd,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            duration_ms=duration_ms,
            trace=trace,
            fingerprint=fingerprint,
            at=now,
            actor=actor,
            caused_by=caused_by,
        )

    def expire_lease(self, *, now: datetime, actor: str, caused_by: str) -> None:
        if self.status != Status.CLAIMED or self.lease_expires_at is None:
            raise StateConflict(f"item is {self.status}: no lease to expire")
        if self.lease_expires_at > now:
            raise StateConflict(f"lease runs until {self.lease_expires_at.isoformat()}")
        assert self.lease_id is not None
        assert self.agent is not None
        self._lease_expired(
            stage=self.stage,
            lease_id=self.lease_id,
            agent=self.agent,
            actor=actor,
            caused_by=caused_by,
        )

    # -- the bus's decisions ---------------------------------------------------------------

    def awaits_decision_on(self, version: int) -> bool:
        """True while the event at `version` is the trigger the bus has still to decide on."""
        return self.status == Status.ADVANCING and self.trigger_version == version

    def advance_to(
        self, *, stage: str, not_before: datetime | None, reason: str, actor: str, caused_by: str
    ) -> None:
        self._require_advancing()
        retry = reason == "retry"
        self._make_ready(
            stage=stage,
            visit=self.visit if retry else self.visits.get(stage, 0) + 1,
            attempt=self.attempt + 1 if retry else 1,
            not_before=not_before,
            reason=reason,
            actor=actor,
            caused_by=caused_by,
        )

    def finish(self, *, actor: str, caused_by: str) -> None:
        self._require_advancing()
        self._completed(actor=actor, caused_by=caused_by)

    def park(self, *, reason: str, detail: str, actor: str, caused_by: str) -> None:
        if self.is_final or self.status == Status.PARKED:
            raise StateConflict(f"item is {self.status}: it cannot be parked")
        self._parked(
            stage=self.stage, reason=reason, detail=detail, actor=actor, caused_by=caused_by
        )

    def halt(
        self,
        *,
        reason: str,
        detail: str,
        resume_stage: str | None,
        resume_reason: str,
        actor: str,
        caused_by: str,
    ) -> None:
        """Stop the item; resuming it later makes `resume_stage` ready (None: completes it)."""
        if self.is_final or self.status in (Status.PARKED, Status.HALTED):
            raise StateConflict(f"item is {self.status}: it cannot be halted")
        self._halted(
            reason=reason,
            detail=detail,
            resume_stage=resume_stage,
            resume_reason=resume_reason,
            actor=actor,
            caused_by=caused_by,
        )

    # -- operators' commands ---------------------------------------------------------------

    def retry(self, *, actor: str, caused_by: str) -> None:
        """Un-park: the stage it stopped at is ready again, with its attempts reset."""
        if self.status != Status.PARKED:
            raise StateConflict(f"only a parked item can be retried; this one is {self.status}")
        self._make_ready(
            stage=self.stage,
            visit=self.visit,
            attempt=1,
            not_before=None,
            reason="manual",
            actor=actor,
            caused_by=caused_by,
        )

    def resume(self, *, actor: str, caused_by: str) -> None:
        """Carry on where the halt stopped the item: the next stage, a retry, or completion."""
        if self.status != Status.HALTED:
            raise StateConflict(f"only a halted item can be resumed; this one is {self.status}")
        stage, reason = self.resume_stage, self.resume_reason
        self._resumed(actor=actor, caused_by=caused_by)
        if stage is None:
            self._completed(actor=actor, caused_by=caused_by)
            return
        retry = reason == "retry"
        self._make_ready(
            stage=stage,
            visit=self.visit if retry else self.visits.get(stage, 0) + 1,
            attempt=self.attempt + 1 if retry else 1,
            not_before=None,
            reason="manual",
            actor=actor,
            caused_by=caused_by,
        )

    def cancel(self, *, actor: str, caused_by: str) -> None:
        if self.is_final:
            raise StateConflict(f"item is {self.status} already")
        self._cancelled(actor=actor, caused_by=caused_by)

    # -- guards on commands ------------------------------------------------------------------

    def _check_not_finished(self, lease_id: str, fingerprint: str) -> None:
        finished = self.finished_leases.get(lease_id)
        if finished is None:
            return
        first_fingerprint, version = finished
        if first_fingerprint == EXPIRED:
            raise LeaseLost("the lease expired before this report")
        if first_fingerprint == fingerprint:
            raise RepeatedCompletion(version)
        raise ReportMismatch("this lease was already finished with a different report")

    def _check_lease_held(self, lease_id: str, agent: str, now: datetime) -> None:
        if self.status != Status.CLAIMED or self.lease_id != lease_id:
            raise LeaseLost("the lease is not the item's current lease")
        if self.agent != agent:
            raise NotLeaseHolder("the lease belongs to another agent")
        if self.lease_expires_at is not None and self.lease_expires_at <= now:
            raise LeaseLost(f"the lease expired at {self.lease_expires_at.isoformat()}")

    def _require_advancing(self) -> None:
        if self.status != Status.ADVANCING:
            raise StateConflict(f"item is {self.status}: there is no decision to make")

    # -- events: each applies one fact to the state --------------------------------------------

    @event("StageReady")
    def _make_ready(
        self,
        *,
        stage: str,
        visit: int,
        attempt: int,
        not_before: datetime | None,
        reason: str,
        actor: str,
        caused_by: str,
    ) -> None:
        if visit != self.visits.get(stage, 0):
            self.path.append(stage)
            if self.stage:
                self.transitions += 1
            self.visits[stage] = visit
        self.status = Status.READY
        self.stage = stage
        self.visit = visit
        self.attempt = attempt
        self.not_before = not_before
        self._clear_lease()
        self.trigger_version = None

    @event("StageClaimed")
    def _claimed(
        self,
        *,
        stage: str,
        lease_id: str,
        agent: str,
        attempt: int,
        expires_at: datetime,
        actor: str,
        caused_by: str,
    ) -> None:
        self.status = Status.CLAIMED
        self.lease_id = lease_id
        self.agent = agent
        self.lease_expires_at = expires_at

    @event("LeaseRenewed")
    def _lease_renewed(
        self, *, lease_id: str, expires_at: datetime, actor: str, caused_by: str
    ) -> None:
        self.lease_expires_at = expires_at

    @event("StageCompleted")
    def _stage_completed(
        self,
        *,
        stage: str,
        lease_id: str,
        agent: str,
        outcome: str | None,
        output: Any,
        cost_usd: Decimal,
        tokens_in: int,
        tokens_out: int,
        duration_ms: int,
        trace: Any,
        fingerprint: str,
        at: datetime,
        actor: str,
        caused_by: str,
    ) -> None:
        self.outputs[stage] = output
        self._spent(cost_usd, tokens_in, tokens_out)
        self._finish_lease(lease_id, fingerprint)

    @event("StageFailed")
    def _stage_failed(
        self,
        *,
        stage: str,
        lease_id: str,
        agent: str,
        error: str,
        retryable: bool,
        cost_usd: Decimal,
        tokens_in: int,
        tokens_out: int,
        duration_ms: int,
        trace: Any,
        fingerprint: str,
        at: datetime,
        actor: str,
        caused_by: str,
    ) -> None:
        self._spent(cost_usd, tokens_in, tokens_out)
        self._finish_lease(lease_id, fingerprint)

    @event("LeaseExpired")
    def _lease_expired(
        self, *, stage: str, lease_id: str, agent: str, actor: str, caused_by: str
    ) -> None:
        self.finished_leases[lease_id] = (EXPIRED, self._applying_version)
        self._await_decision()

    @event("ItemParked")
    def _parked(self, *, stage: str, reason: str, detail: str, actor: str, caused_by: str) -> None:
        self.status = Status.PARKED
        self._clear_lease()
        self.trigger_version = None

    @event("ItemHalted")
    def _halted(
        self,
        *,
        reason: str,
        detail: str,
        resume_stage: str | None,
        resume_reason: str,
        actor: str,
        caused_by: str,
    ) -> None:
        self.resume_stage = resume_stage
        self.resume_reason = resume_reason
        self.status = Status.HALTED
        self._clear_lease()
        self.trigger_version = None

    @event("ItemResumed")
    def _resumed(self, *, actor: str, caused_by: str) -> None:
        pass

    @event("ItemCompleted")
    def _completed(self, *, actor: str, caused_by: str) -> None:
        self.status = Status.DONE
        self._clear_lease()
        self.trigger_version = None

    @event("ItemCancelled")
    def _cancelled(self, *, actor: str, caused_by: str) -> None:
        self.status = Status.CANCELLED
        self._clear_lease()
        self.trigger_version = None

    def _spent(self, cost_usd: Decimal, tokens_in: int, tokens_out: int) -> None:
        self.cost_usd += cost_usd
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out

    def _finish_lease(self, lease_id: str, fingerprint: str) -> None:
        self.finished_leases[lease_id] = (fingerprint, self._applying_version)
        self._await_decision()

    def _await_decision(self) -> None:
        self.status = Status.ADVANCING
        self.lease_expires_at = None
        self.trigger_version = self._applying_version

    @property
    def _applying_version(self) -> int:
        # While an event applies, the aggregate still carries the version before it.
        return self.version + 1

    def _clear_lease(self) -> None:
        self.lease_id = None
        self.agent = None
        self.lease_expires_at = None
