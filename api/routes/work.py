"""Claims and leases: how agents take work and report on it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from api.container import Container
from api.deps import AgentPrincipal, ByDep, ContainerDep, request_context
from api.errors import Problem
from api.openapi import problems
from api.presenters import item_from_aggregate
from api.schemas import (
    ClaimOut,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatOut,
    StageReportOut,
)
from domain.application import StateOwner, lease_item_id
from domain.errors import NotFound, RepeatedCompletion
from domain.item import Item
from domain.values import By, Claimant

router = APIRouter(tags=["work"])


@router.post(
    "/v1/claims",
    response_model=ClaimOut,
    responses={
        204: {"description": "nothing is ready at that stage"},
        **problems(409, 423, 429, body=True),
    },
)
async def claim(
    body: ClaimRequest,
    request: Request,
    principal: AgentPrincipal,
    container: ContainerDep,
    by: ByDep,
) -> Any:
    """Claim the oldest ready item at a stage, waiting up to wait_seconds for one to become ready."""
    claimed = await container.claims.claim(principal.claimant, body.stage, body.wait_seconds, by)
    if claimed is None:
        return Response(status_code=204)
    item = claimed.item
    request_context(request)["item_id"] = str(item.id)
    return {
        "item": item_from_aggregate(item, claimed.position),
        "lease": {
            "id": claimed.lease_id,
            "stage": item.stage,
            "attempt": item.attempt,
            "expires_at": item.lease_expires_at,
        },
        "input": item.input,
        "outputs": item.outputs,
        "eval": item.eval,
    }


@dataclass(frozen=True)
class LeaseCall:
    """A lease holder's call: the lease it names, who calls, and what to act with."""

    lease_id: str
    holder: Claimant
    container: Container
    by: By


async def lease_call(
    lease_id: str, request: Request, principal: AgentPrincipal, container: ContainerDep, by: ByDep
) -> LeaseCall:
    with contextlib.suppress(NotFound):
        request_context(request)["item_id"] = str(lease_item_id(lease_id))
    return LeaseCall(lease_id, principal.claimant, container, by)


LeaseDep = Annotated[LeaseCall, Depends(lease_call)]


def _check_trace_size(container: Container, trace: Any) -> None:
    size = len(json.dumps(trace, default=str).encode())
    if size > container.settings.max_trace_bytes:
        raise Problem(
            413,
            "payload_too_large",
            "Trace too large",
            f"the trace is {size} bytes; the limit is {container.settings.max_trace_bytes}: "
            "store large inputs and outputs elsewhere and put references in the trace",
        )


def _report(
    call: LeaseCall, trace: Any, report: Callable[[StateOwner], tuple[Item, int]]
) -> dict[str, Any]:
    _check_trace_size(call.container, trace)
    try:
        item, position = report(call.container.app)
    except RepeatedCompletion as repeat:
        # The first answer, given again for an identical repeat.
        item_id = lease_item_id(call.lease_id)
        item = call.container.app.item_as_reported(item_id, repeat.version)
        position = call.container.queries.event_position(item_id, item.version)
    return {
        "item_id": str(item.id),
        "stage": item.stage,
        "status": item.status,
        "version": item.version,
        "position": position,
    }


# The lease routes are async and make one trip through the thread pool for their database
# work: a sync route would take two (the handler, then its response's validation).


@router.post(
    "/v1/leases/{lease_id}/heartbeat", response_model=HeartbeatOut, responses=problems(404, 409)
)
async def heartbeat(call: LeaseDep) -> dict[str, Any]:
    item, position = await run_in_threadpool(
        call.container.app.renew_lease, call.lease_id, call.holder, call.by
    )
    return {"expires_at": item.lease_expires_at, "version": item.version, "position": position}


@router.post(
    "/v1/leases/{lease_id}/complete",
    response_model=StageReportOut,
    responses=problems(404, 409, body=True),
)
async def complete(body: CompleteRequest, call: LeaseDep) -> dict[str, Any]:
    """Report a stage done; what follows it (the next stage ready, say) is decided in the same
    append. An identical repeat is answered again."""
    return await run_in_threadpool(
        _report,
        call,
        body.trace,
        lambda app: app.complete_stage(call.lease_id, call.holder, body.completion(), call.by),
    )


@router.post(
    "/v1/leases/{lease_id}/fail",
    response_model=StageReportOut,
    responses=problems(404, 409, body=True),
)
async def fail(body: FailRequest, call: LeaseDep) -> dict[str, Any]:
    """Report a stage failed; it is retried with backoff or parked, in the same append."""
    return await run_in_threadpool(
        _report,
        call,
        body.trace,
        lambda app: app.fail_stage(call.lease_id, call.holder, body.failure(), call.by),
    )
