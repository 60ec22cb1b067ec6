"""Claims and leases: how agents take work and report on it."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from api.auth import Principal
from api.deps import AgentPrincipal, RequestIdDep, RuntimeDep, request_context
from api.errors import Problem, forbidden
from api.presenters import item_from_aggregate
from api.runtime import Runtime
from api.schemas import (
    ClaimOut,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatOut,
    StageReportOut,
)
from domain.application import lease_item_id
from domain.errors import ConcurrentUpdate, NotFound, RepeatedCompletion, StateConflict
from domain.guards import breaker_state, window_of
from domain.item import Item
from projections import queries

router = APIRouter(tags=["work"])

CANDIDATES_PER_TRY = 8
SAFETY_RECHECK_SECONDS = 5.0
CONTENDED_RECHECK_SECONDS = 0.01


def _claim_one(
    runtime: Runtime,
    principal: Principal,
    stage: str,
    item_id: uuid.UUID,
    caused_by: str,
    halted_topics: frozenset[str],
) -> dict[str, Any] | None:
    try:
        item, lease_id, position = runtime.app.claim(
            item_id,
            stage=stage,
            agent=principal.name,
            actor=principal.actor,
            caused_by=caused_by,
            halted_topics=halted_topics,
        )
    except (StateConflict, ConcurrentUpdate, NotFound):
        return None  # another agent won it, or what we read is behind the item
    runtime.recent_claims.add(item_id, item.version)
    assert item.lease_expires_at is not None
    return {
        "item": item_from_aggregate(item, position),
        "lease": {
            "id": lease_id,
            "stage": stage,
            "attempt": item.attempt,
            "expires_at": item.lease_expires_at,
        },
        "input": item.input,
        "outputs": item.outputs,
    }


def _try_claim(
    runtime: Runtime,
    principal: Principal,
    stage: str,
    caused_by: str,
    halted_topics: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    # An item a writer just made ready goes to one waiter before item_status shows it.
    while (hinted := runtime.ready.take_hint(stage)) is not None:
        claimed = _claim_one(runtime, principal, stage, hinted, caused_by, halted_topics)
        if claimed is not None:
            return claimed
    now = runtime.app.clock()
    behind = runtime.recent_claims.current()
    passed_over: list[uuid.UUID] = []
    with runtime.pool.connection() as conn, conn.transaction():
        for _ in range(CANDIDATES_PER_TRY):
            item_id = queries.next_ready_candidate(
                conn, stage, now, passed_over, behind, halted_topics
            )
            if item_id is None:
                return None
            claimed = _claim_one(runtime, principal, stage, item_id, caused_by, halted_topics)
            if claimed is not None:
                return claimed
            passed_over.append(item_id)
    return None


def _next_wake(runtime: Runtime, stage: str, remaining: float) -> float:
    now: datetime = runtime.app.clock()
    with runtime.pool.connection() as conn:
        if queries.any_ready(conn, stage, now):
            # Ready rows exist but others hold them; if one of those claims fails, no NOTIFY comes.
            return min(remaining, CONTENDED_RECHECK_SECONDS)
        not_before = queries.next_not_before(conn, stage, now)
    timeout = min(remaining, SAFETY_RECHECK_SECONDS)
    if not_before is not None:
        timeout = min(timeout, max((not_before - now).total_seconds(), 0.001))
    return timeout


def _check_breakers(runtime: Runtime, principal: Principal, stage: str) -> frozenset[str]:
    """Refuse the claim (423) when a breaker over this agent, its stage or everything is open;
    return the topics whose breakers are open, whose items are not to be handed out."""
    window = window_of(runtime.app.clock())
    with runtime.pool.connection() as conn:
        rows = queries.budgets_with_spend(conn, window)
    halted_topics = set()
    own_scopes = {"global", f"stage:{stage}", f"agent:{principal.name}"}
    for row in rows:
        state = breaker_state(
            row["spent_usd"],
            row["alert_usd"],
            row["halt_usd"],
            reset_this_window=row["reset_this_window"],
        )
        if state != "halted":
            continue
        if row["scope"] in own_scopes:
            runtime.metrics.claims.labels(stage, "budget_halted").inc()
            raise Problem(
                423,
                "budget_halted",
                "Budget halted",
                f"the breaker of {row['scope']} is open: {row['spent_usd']} USD spent today "
                f"of a {row['halt_usd']} USD halt limit",
                scope=row["scope"],
                spent_usd=float(row["spent_usd"]),
                halt_usd=float(row["halt_usd"]),
                window=window,
            )
        if row["scope"].startswith("topic:"):
            halted_topics.add(row["scope"].removeprefix("topic:"))
    return frozenset(halted_topics)


@router.post(
    "/v1/claims",
    response_model=ClaimOut,
    responses={204: {"description": "nothing is ready at that stage"}},
)
def claim(
    body: ClaimRequest,
    request: Request,
    principal: AgentPrincipal,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> Any:
    """Claim the oldest ready item at a stage, waiting up to wait_seconds for one to become ready."""
    if not principal.may_work_on(body.stage):
        runtime.metrics.claims.labels(body.stage, "forbidden").inc()
        raise forbidden(
            f"stage {body.stage!r} is outside your scope ({', '.join(sorted(principal.stages))})"
        )
    deadline = time.monotonic() + body.wait_seconds
    while True:
        halted_topics = _check_breakers(runtime, principal, body.stage)
        seen = runtime.ready.generation(body.stage)
        claimed = _try_claim(runtime, principal, body.stage, caused_by, halted_topics)
        if claimed is not None:
            request_context(request)["item_id"] = claimed["item"]["id"]
            runtime.metrics.claims.labels(body.stage, "claimed").inc()
            return claimed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            runtime.metrics.claims.labels(body.stage, "empty").inc()
            return Response(status_code=204)
        runtime.ready.wait(body.stage, seen, _next_wake(runtime, body.stage, remaining))


def _check_trace_size(runtime: Runtime, trace: Any) -> None:
    size = len(json.dumps(trace, default=str).encode())
    if size > runtime.settings.max_trace_bytes:
        raise Problem(
            413,
            "payload_too_large",
            "Trace too large",
            f"the trace is {size} bytes; the limit is {runtime.settings.max_trace_bytes}: "
            "store large inputs and outputs elsewhere and put references in the trace",
        )


def _lease_context(request: Request, lease_id: str) -> None:
    with contextlib.suppress(NotFound):
        request_context(request)["item_id"] = str(lease_item_id(lease_id))


def _report(item: Item, stage: str, version: int, position: int) -> dict[str, Any]:
    return {
        "item_id": str(item.id),
        "stage": stage,
        "status": item.status,
        "version": version,
        "position": position,
    }


def _repeat(runtime: Runtime, lease_id: str, version: int) -> dict[str, Any]:
    """The first answer to a report, given again for an identical repeat."""
    item_id = lease_item_id(lease_id)
    at_report = runtime.app.item(item_id, version=version)
    with runtime.pool.connection() as conn:
        position = queries.event_position(conn, item_id, version) or 0
    return _report(at_report, at_report.stage, version, position)


@router.post("/v1/leases/{lease_id}/heartbeat", response_model=HeartbeatOut)
def heartbeat(
    lease_id: str,
    request: Request,
    principal: AgentPrincipal,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    _lease_context(request, lease_id)
    item, position = runtime.app.renew_lease(
        lease_id, agent=principal.name, actor=principal.actor, caused_by=caused_by
    )
    return {"expires_at": item.lease_expires_at, "version": item.version, "position": position}


def _report_on_lease(
    runtime: Runtime,
    request: Request,
    lease_id: str,
    trace: Any,
    report: Callable[[], tuple[Item, int]],
) -> dict[str, Any]:
    _lease_context(request, lease_id)
    _check_trace_size(runtime, trace)
    try:
        item, position = report()
    except RepeatedCompletion as repeat:
        return _repeat(runtime, lease_id, repeat.version)
    return _report(item, item.stage, item.version, position)


@router.post("/v1/leases/{lease_id}/complete", response_model=StageReportOut)
def complete(
    lease_id: str,
    body: CompleteRequest,
    request: Request,
    principal: AgentPrincipal,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    """Report a stage done; the bus then fires the next stage. An identical repeat is answered again."""
    return _report_on_lease(
        runtime,
        request,
        lease_id,
        body.trace,
        lambda: runtime.app.complete_stage(
            lease_id,
            agent=principal.name,
            outcome=body.outcome,
            output=body.output,
            cost_usd=body.cost_usd,
            tokens_in=body.tokens_in,
            tokens_out=body.tokens_out,
            duration_ms=body.duration_ms,
            trace=body.trace,
            actor=principal.actor,
            caused_by=caused_by,
        ),
    )


@router.post("/v1/leases/{lease_id}/fail", response_model=StageReportOut)
def fail(
    lease_id: str,
    body: FailRequest,
    request: Request,
    principal: AgentPrincipal,
    runtime: RuntimeDep,
    caused_by: RequestIdDep,
) -> dict[str, Any]:
    """Report a stage failed; the bus retries it with backoff or parks the item."""
    return _report_on_lease(
        runtime,
        request,
        lease_id,
        body.trace,
        lambda: runtime.app.fail_stage(
            lease_id,
            agent=principal.name,
            error=body.error,
            retryable=body.retryable,
            cost_usd=body.cost_usd,
            tokens_in=body.tokens_in,
            tokens_out=body.tokens_out,
            duration_ms=body.duration_ms,
            trace=body.trace,
            actor=principal.actor,
            caused_by=caused_by,
        ),
    )
