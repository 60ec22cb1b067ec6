from __future__ import annotations

import json
import tomllib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from api import door
from api.deps import AnyPrincipal, AppDep, ByDep, ContainerDep, Operator
from api.errors import validation
from api.middleware import NOT_JSON_MEDIA
from api.openapi import problems
from api.schemas import Name, PipelineOut
from domain.pipeline import (
    EXIT_CRITERIA,
    MAX_ATTEMPTS,
    MAX_BACKOFF_SECONDS,
    MAX_CONCURRENT,
    MAX_ITEM_BUDGET_USD,
    MAX_TRANSITIONS,
    MAX_VISITS,
    Pipeline,
)

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])

SPEC_EXAMPLE = {
    "stages": [
        {"name": "research", "max_attempts": 3, "lease_seconds": 300, "retry_backoff_seconds": 2},
        {"name": "draft"},
        {"name": "edit", "on": {"revise": "draft"}},
        {"name": "publish"},
    ],
    "max_visits_per_stage": 3,
    "max_transitions": 50,
}


# What a spec may hold, as far as JSON Schema can say it; the rest (stage names unique, every
# `on` route to a stage of the spec, the service's limits on stages and routes) is checked when
# it is put, and named in the 422.
STAGE_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "pattern": r"^\S([\s\S]*\S)?$",
        },
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS},
        "lease_seconds": {"type": "number", "minimum": 1, "maximum": 24 * 3600},
        "retry_backoff_seconds": {"type": "number", "minimum": 0, "maximum": MAX_BACKOFF_SECONDS},
        "on": {
            "type": "object",
            "description": "outcome -> the stage it leads to (not `done`, which is the next stage)",
            "propertyNames": {"minLength": 1, "not": {"const": "done"}},
            "additionalProperties": {"type": "string"},
        },
        "max_concurrent": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_CONCURRENT,
            "description": "the most leases this stage may have out at once",
        },
        "on_park": {
            "type": ["string", "null"],
            "description": "a fallback: the stage made ready when the guards park this one",
        },
    },
}
SPEC_SCHEMA = {
    "type": "object",
    "required": ["stages"],
    "additionalProperties": False,
    "properties": {
        "stages": {"type": "array", "minItems": 1, "maxItems": 100, "items": STAGE_SCHEMA},
        "max_visits_per_stage": {"type": "integer", "minimum": 1, "maximum": MAX_VISITS},
        "max_transitions": {"type": "integer", "minimum": 1, "maximum": MAX_TRANSITIONS},
        "item_budget_usd": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_ITEM_BUDGET_USD,
        },
        "exit_criteria": {
            "type": ["object", "null"],
            "description": "the pilot's targets, measured by GET /v1/pipelines/{name}/report",
            "additionalProperties": False,
            "properties": {
                name: {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1 if name.endswith("_rate") else 1e12,
                }
                for name in EXIT_CRITERIA
            },
        },
        "eval_gate": {
            "type": ["object", "null"],
            "description": "while this version is active, a new version waits for an activation "
            "its eval results must earn (see POST .../versions/{version}/activate)",
            "additionalProperties": False,
            "properties": {
                "tolerance": {"type": "number", "minimum": 0, "maximum": 1},
                "max_cost_ratio": {
                    "type": ["number", "null"],
                    "exclusiveMinimum": 0,
                    "maximum": 1000,
                },
            },
        },
    },
}


def _body(pipeline: Pipeline, position: int | None, active_version: int) -> dict[str, Any]:
    return {
        "name": pipeline.name,
        "version": pipeline.version,
        "spec": pipeline.spec,
        "position": position,
        "updated_at": pipeline.modified_on,
        "active_version": active_version,
    }


async def _spec_from(request: Request, max_depth: int) -> Any:
    """The spec in the body, JSON or TOML; the middleware screened JSON bodies already, the
    TOML is screened here the same way."""
    raw = await request.body()
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    is_toml = media_type in NOT_JSON_MEDIA
    try:
        spec = tomllib.loads(raw.decode()) if is_toml else json.loads(raw)
    except RecursionError:
        raise validation(f"body: nesting deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise validation(
            f"the spec is not valid {'TOML' if is_toml else 'JSON'}: {error}"
        ) from None
    refused = list(door.refusals(spec, "body", max_depth)) if is_toml else []
    if refused:
        raise validation(
            "; ".join(f"{r.location}: {r.message}" for r in refused[:5]),
            errors=[r.entry() for r in refused],
        )
    return spec


@router.put(
    "/{name}",
    response_model=PipelineOut,
    responses=problems(409, body=True),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": SPEC_SCHEMA, "example": SPEC_EXAMPLE},
                "application/toml": {"schema": {"type": "string"}},
            },
        }
    },
)
async def put_pipeline(
    name: Name, request: Request, principal: Operator, container: ContainerDep, by: ByDep
) -> dict[str, Any]:
    """Define or revise a pipeline; every PUT makes a new version."""
    spec = await _spec_from(request, container.settings.max_json_depth)
    pipeline, position = await run_in_threadpool(container.app.put_pipeline, name, spec, by)
    _, active = await run_in_threadpool(container.app.active_version, name)
    return _body(pipeline, position, active)


@router.get("/{name}", response_model=PipelineOut, responses=problems(404))
def get_pipeline(
    name: Name,
    principal: AnyPrincipal,
    app: AppDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> dict[str, Any]:
    _, active = app.active_version(name)
    return _body(app.pipeline(name, version=version), None, active)
