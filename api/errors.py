"""RFC 9457 problem responses, and the one place domain errors become HTTP statuses."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool
import structlog
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from bus.claims import TooManyWaiting
from domain import errors

log = structlog.get_logger(__name__)

PROBLEM_TYPE_BASE = "https://stateowner.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An answer that is not a success, raised from anywhere in `api/`."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra


def wants_html(request: Request) -> bool:
    """A browser asking for a page: it gets an HTML error page; API clients (and anything under
    /v1/) keep problem+json."""
    return not request.url.path.startswith("/v1/") and "text/html" in request.headers.get(
        "accept", ""
    )


def answer(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The problem, or the console's error page when a browser asked for a page."""
    render = getattr(request.app.state, "html_errors", None)
    if render is not None and wants_html(request):
        response: Response = render(request, status, detail)
        return response
    return problem_response(status, code, title, detail, headers=headers, **extra)


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(
        jsonable_encoder(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not_found", "Not found", detail)


def idempotency_mismatch() -> Problem:
    return Problem(
        409,
        "idempotency_mismatch",
        "Idempotency key reused",
        "this Idempotency-Key came with another body",
    )


def validation(detail: str, **extra: Any) -> Problem:
    return Problem(422, "validation_error", "Invalid request", detail, **extra)


DOMAIN_ERRORS: list[tuple[type[errors.DomainError], int, str, str]] = [
    (errors.NotFound, 404, "not_found", "Not found"),
    (errors.AlreadyExists, 409, "already_exists", "Already exists"),
    (errors.InvalidPipelineSpec, 422, "validation_error", "Invalid pipeline spec"),
    (errors.EvalGateRefused, 409, "eval_gate", "Refused by the eval gate"),
    (errors.InvalidCommand, 422, "validation_error", "Invalid command"),
    (errors.LeaseLost, 409, "lease_lost", "Lease lost"),
    (errors.NotLeaseHolder, 403, "forbidden", "Not the lease holder"),
    (errors.OutsideScope, 403, "forbidden", "Forbidden"),
    (errors.BudgetHalted, 423, "budget_halted", "Budget halted"),
    (errors.ReportMismatch, 409, "idempotency_mismatch", "Report differs from the first one"),
    (errors.ConcurrentUpdate, 409, "version_conflict", "Concurrent update"),
    (errors.StateConflict, 409, "invalid_state", "Not allowed in this state"),
]


def _extra(error: errors.DomainError) -> dict[str, Any]:
    """What a client needs besides the detail to act on the refusal."""
    if isinstance(error, errors.InvalidField):
        return {"errors": [{"location": f"body.{error.field}", "message": error.message}]}
    if isinstance(error, errors.BudgetHalted):
        return {
            "scope": error.scope,
            "spent_usd": float(error.spent_usd),
            "halt_usd": float(error.halt_usd),
            "window": error.window,
        }
    field = getattr(error, "field", None)
    if isinstance(error, errors.InvalidCommand) and field:
        return {
            "errors": [{"location": f"body.{field}", "message": str(error), "type": "value_error"}]
        }
    return {}


def problem_for_domain_error(error: errors.DomainError) -> Problem:
    for cls, status, code, title in DOMAIN_ERRORS:
        if isinstance(error, cls):
            return Problem(status, code, title, str(error), **_extra(error))
    return Problem(409, "invalid_state", "Refused", str(error))


def _validation_detail(error: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    found = []
    for entry in error.errors():
        location = ".".join(str(part) for part in entry.get("loc", ()))
        found.append(
            {"location": location, "message": entry.get("msg", ""), "type": entry.get("type")}
        )
    if any(entry["type"] == "json_invalid" for entry in found):
        return "the body is not valid JSON", found
    summary = "; ".join(f"{entry['location']}: {entry['message']}" for entry in found[:5])
    return summary or "the request is not valid", found


UNAVAILABLE_ERRORS = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    StoreOperationalError,
    StoreInterfaceError,
)


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path: a path served by several routes (GET and
    POST /v1/items) would otherwise name only the first route's."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, error: Problem) -> Response:
        return answer(
            request,
            error.status,
            error.code,
            error.title,
            error.detail,
            headers=error.headers,
            **error.extra,
        )

    @app.exception_handler(errors.DomainError)
    async def on_domain_error(request: Request, error: errors.DomainError) -> Response:
        problem = problem_for_domain_error(error)
        return answer(
            request, problem.status, problem.code, problem.title, problem.detail, **problem.extra
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> Response:
        detail, found = _validation_detail(error)
        return answer(request, 422, "validation_error", "Invalid request", detail, errors=found)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
        }.get(error.status_code, "http_error")
        detail = str(error.detail)
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no route for {request.url.path}"
        return answer(
            request,
            error.status_code,
            code,
            "Not found" if error.status_code == 404 else str(error.detail),
            detail,
            headers=headers,
        )

    for unavailable in UNAVAILABLE_ERRORS:

        @app.exception_handler(unavailable)
        async def on_unavailable(request: Request, error: Exception) -> Response:
            log.warning("database_unavailable", error=str(error))
            container = getattr(request.app.state, "container", None)
            if container is not None and container.started:
                container.health.lost(str(error))
            return answer(
                request,
                503,
                "unavailable",
                "Service unavailable",
                "the database cannot be reached; try again shortly",
                headers={"Retry-After": "1"},
            )

    @app.exception_handler(TooManyWaiting)
    async def on_too_many_waiting(request: Request, error: TooManyWaiting) -> JSONResponse:
        return problem_response(
            429,
            "too_many_requests",
            "Too many waiting claims",
            str(error),
            headers={"Retry-After": "1"},
        )
