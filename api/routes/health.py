"""Probes and metrics. They run on the event loop, or in threads and on connections of their
own: a thousand waiting claims, or any other load, never queue them."""

from __future__ import annotations

from typing import Any

import anyio
import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.container import Container
from api.deps import AnyContainerDep, Operator
from api.openapi import problems
from api.routes.log import projection_statuses
from api.schemas import HealthOut, LivenessOut, ReadinessOut
from domain.guards import window_of
from projections.poison import OPEN

log = structlog.get_logger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=LivenessOut, responses=problems(auth=False, database=False))
async def healthz() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _checks(container: Container) -> dict[str, str | None]:
    """Each check's failure (its error), or None when it passes."""
    checks: dict[str, str | None] = {}
    try:
        container.ops_queries.ping(timeout=2)
        checks["database"] = None
    except Exception as error:
        log.warning("readiness_database_failed", error=str(error))
        checks["database"] = type(error).__name__
    for follower in container.followers:
        state = follower.state
        checks[follower.name] = (
            None if state.running and state.error is None else (state.error or "stopped")
        )
    return checks


def _ready(container: Container, checks: dict[str, str | None]) -> bool:
    """Ready while every check passes but those of followers the service can serve without (a
    trace exporter whose collector is away only delays the traces)."""
    optional = {follower.name for follower in container.followers if not follower.required}
    return all(error is None for name, error in checks.items() if name not in optional)


async def _run(container: Container, work: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(work, *args, limiter=container.ops_limiter)


@router.get(
    "/readyz",
    response_model=ReadinessOut,
    responses={
        **problems(auth=False, database=False),
        503: {"model": ReadinessOut, "description": "not ready: a check is failing"},
    },
)
async def readyz(container: AnyContainerDep) -> JSONResponse:
    """Readiness: the database answers and every follower this process runs is running. It says
    only ok or failing per check; operators read why at /v1/health."""
    checks = await _run(container, _checks, container)
    ready = _ready(container, checks)
    return JSONResponse(
        {
            "status": "ready" if ready else "not_ready",
            "checks": {
                name: "ok" if error is None else "failing" for name, error in checks.items()
            },
        },
        status_code=200 if ready else 503,
    )


@router.get("/v1/health", response_model=HealthOut, responses=problems(database=False))
async def health(principal: Operator, container: AnyContainerDep) -> dict[str, Any]:
    """Readiness with its reasons, for operators: each check's error, each follower's state."""
    checks = await _run(container, _checks, container)
    return {
        "status": "ready" if _ready(container, checks) else "not_ready",
        "checks": {name: error or "ok" for name, error in checks.items()},
        "followers": [
            {
                "name": follower.name,
                "running": follower.state.running,
                "standby": follower.state.standby,
                "position": follower.state.position,
                "failures": follower.state.failures,
                "error": follower.state.error,
            }
            for follower in container.followers
        ],
        "claims_waiting": container.claims.waiting,
    }


def _gather(container: Container, streams_open: int) -> bytes:
    gauges = container.metrics
    gauges.streams_open.set(streams_open)
    try:
        for status in projection_statuses(container, container.ops_queries):
            gauges.follower_position.labels(status["name"]).set(status["position"])
            gauges.follower_lag.labels(status["name"]).set(status["lag"])
            gauges.log_head.set(status["head"])
        for follower in container.followers:
            gauges.follower_failures.labels(follower.name).set(follower.state.failures)
        stopped = {d.view for d in container.dead_letters.all() if d.status == OPEN}
        for name in container.views:
            gauges.projection_stopped.labels(name).set(1 if name in stopped else 0)
        states = {"ok": 0, "alerting": 1, "halted": 2}
        for budget in container.ops_queries.budgets(window_of(container.app.clock())):
            gauges.spend.labels(budget.scope).set(float(budget.spent_usd))
            gauges.breaker.labels(budget.scope).set(states[budget.state])
            gauges.budget_alerts.labels(budget.scope).set(budget.alerts)
            gauges.budget_halts.labels(budget.scope).set(budget.halts)
    except Exception as error:  # metrics must answer even when the database does not
        log.warning("metrics_without_positions", error=str(error))
    gauges.claims_waiting.set(container.claims.waiting)
    return generate_latest(gauges.registry)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        },
        **problems(auth=False, database=False),
    },
)
async def metrics(request: Request, container: AnyContainerDep) -> Response:
    """Prometheus text: requests, claims, streams, each follower's position and lag, budgets."""
    streams_open = request.app.state.streams.open
    text = await _run(container, _gather, container, streams_open)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
