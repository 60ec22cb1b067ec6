"""The OpenAPI document, made true: every status a route can answer, with the problem schema
(`application/problem+json`) for every refusal, and nothing FastAPI assumed instead."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import PROBLEM_MEDIA_TYPE
from api.schemas import ProblemOut

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}

WHY: dict[int, str] = {
    401: "unauthorized: no token, or one that is not valid (any more)",
    403: "forbidden: the caller's role or scope does not allow this",
    404: "not_found: nothing by that name or id",
    408: "request_timeout: the body stopped arriving",
    409: "a conflict with the current state: already_exists, idempotency_mismatch, "
    "version_conflict, lease_lost, invalid_state, position_ahead or eval_gate",
    413: "payload_too_large: the body (or a run's trace) is over the limit",
    422: "validation_error: the request does not parse, or breaks a rule (errors name where)",
    423: "budget_halted: a breaker over this work is open (scope, spent_usd, halt_usd, window)",
    429: "too_many_requests: too many claims waiting (Retry-After)",
    500: "internal: an unexpected error, logged under the request id",
    503: "unavailable: the database cannot be reached, or a projection is behind (Retry-After)",
}
WITH_RETRY_AFTER = {429, 503}


def problems(
    *statuses: int, auth: bool = True, database: bool = True, body: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route: each problem it can answer. Every route may answer 422 (the
    door refuses a NUL or a bad encoding in any path or query) and 500; `auth` adds 401 and 403,
    `database` 503, `body` 408 and 413."""
    found = {422, 500, *statuses}
    if auth:
        found |= {401, 403}
    if database:
        found.add(503)
    if body:
        found |= {408, 413}
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(found):
        answer: dict[str, Any] = {
            "description": WHY[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
        }
        if status in WITH_RETRY_AFTER:
            answer["headers"] = RETRY_AFTER
        responses[status] = answer
    return responses


def install_openapi(app: FastAPI) -> None:
    """Serve the document with the Problem schema among its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            problem = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(problem.pop("$defs", {}))
            schemas["Problem"] = problem
            # FastAPI adds these for the 422 it assumes; every 422 here is a Problem instead.
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
