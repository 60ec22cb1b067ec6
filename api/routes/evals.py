"""Eval runs and active versions: run a reference set against a pipeline version, read its
results, and activate a version through the active version's eval gate."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from starlette.concurrency import run_in_threadpool

from api.container import Container
from api.deps import AnyPrincipal, ByDep, ContainerDep, Operator, parse_uuid, wait_for_view
from api.errors import forbidden, idempotency_mismatch, not_found, validation
from api.evals import activate, compared_with_active, run_body, schema_problem
from api.openapi import problems
from api.schemas import (
    ActivationOut,
    EvalCreate,
    EvalRunListOut,
    EvalRunOut,
    EvalStartedOut,
    IdempotencyKey,
    Name,
)
from domain.agent import Role
from domain.errors import AlreadyExists, InvalidEvalCase
from domain.eval_run import EvalRun
from domain.values import By

router = APIRouter(prefix="/v1/pipelines", tags=["evals"])

EVAL_NAMESPACE = uuid.UUID("3c8d2b7a-1f4e-4d6b-9a5c-8e7f6d5c4b09")
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
Position = Annotated[int | None, Query(ge=0, le=2**62)]


def _started(run: EvalRun, position: int) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "pipeline": run.pipeline,
        "version": run.pipeline_version,
        "items": [str(item_id) for item_id in run.item_ids()],
        "position": position,
    }


def _start(
    container: Container, name: str, body: EvalCreate, key: str | None, by: By
) -> dict[str, Any]:
    raw = body.model_dump(mode="json", exclude_none=True)
    fingerprint = hashlib.sha256(
        json.dumps({"pipeline": name, **raw}, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    # The key fixes the run's identity (and so its items'), so a repeat appends nothing.
    run_id = uuid.uuid5(EVAL_NAMESPACE, f"{by.actor}\n{key}") if key else uuid.uuid4()
    try:
        run, position = container.app.start_eval(
            name,
            body.version,
            raw["cases"],
            topic=body.topic,
            run_id=run_id,
            fingerprint=fingerprint,
            schema_problem=schema_problem,
            by=by,
            max_cases=container.settings.max_eval_cases,
        )
    except InvalidEvalCase as error:
        location = f"body.{error.location}"
        raise validation(
            f"{location}: {error.message}",
            errors=[{"location": location, "message": error.message, "type": "eval_case"}],
        ) from None
    except AlreadyExists:
        run = container.app.eval_run(run_id)
        if run.fingerprint != fingerprint or run.pipeline != name:
            raise idempotency_mismatch() from None
        # The run's events were appended with its items', the last item's ready stage last.
        position = container.queries.event_position(run.item_ids()[-1], 2)
    return _started(run, position)


@router.post(
    "/{name}/evals",
    status_code=201,
    response_model=EvalStartedOut,
    responses=problems(404, 409, body=True),
)
async def start_eval(
    name: Name,
    body: EvalCreate,
    principal: Operator,
    container: ContainerDep,
    by: ByDep,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> dict[str, Any]:
    """Run a reference set against a version: each case becomes an eval item on it (spend in
    scope `eval`), judged by its checks once the item is done; a parked case fails."""
    return await run_in_threadpool(_start, container, name, body, idempotency_key, by)


@router.get("/{name}/evals", response_model=EvalRunListOut, responses=problems(404, 409))
def list_evals(
    name: Name,
    principal: AnyPrincipal,
    container: ContainerDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    min_position: Position = None,
) -> dict[str, Any]:
    """A pipeline's eval runs, newest first, with their summaries (no cases)."""
    container.app.pipeline(name)
    if min_position is not None:
        wait_for_view(container, "evals", min_position)
    runs = container.queries.eval_runs(name, version, limit)
    return {"runs": [run_body(run, with_cases=False) for run in runs]}


@router.get("/{name}/evals/{run_id}", response_model=EvalRunOut, responses=problems(404, 409))
def get_eval(
    name: Name,
    run_id: str,
    principal: AnyPrincipal,
    container: ContainerDep,
    min_position: Position = None,
) -> dict[str, Any]:
    """An eval run: running or finished, passed, failed, pass rate, cost per item, each case,
    and beside it the active version's latest finished run and what its eval gate says."""
    wanted = parse_uuid(run_id, "eval run")
    if min_position is not None:
        wait_for_view(container, "evals", min_position)
    run = container.queries.eval_run(wanted)
    if run is None or run["pipeline"] != name:
        raise not_found(f"no eval run {run_id} of pipeline {name!r}")
    return {**run_body(run), "compared_with_active": compared_with_active(container, run)}


@router.post(
    "/{name}/versions/{version}/activate",
    response_model=ActivationOut,
    responses=problems(404, 409),
)
async def activate_version(
    name: Name,
    version: Version,
    principal: Operator,
    container: ContainerDep,
    by: ByDep,
    force: bool = False,
) -> dict[str, Any]:
    """Make a version the one new items start on. While the active version has an eval_gate,
    its latest finished eval run must meet it (409 eval_gate otherwise); an admin may force it."""
    if force and principal.role != Role.ADMIN:
        raise forbidden("only an admin may force an activation past the eval gate")
    return await run_in_threadpool(activate, container, name, version, force, by)
