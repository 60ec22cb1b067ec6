from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import AnyContainerDep
from api.routes.log import projection_statuses
from domain.guards import window_of

log = structlog.get_logger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(container: AnyContainerDep) -> JSONResponse:
    """Readiness: the database answers and every follower this process runs is running."""
    checks: dict[str, Any] = {}
    try:
        container.queries.ping(timeout=2)
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    for follower in container.followers:
        state = follower.state
        checks[follower.name] = (
            "ok" if state.running and state.error is None else (state.error or "stopped")
        )
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
def metrics(request: Request, container: AnyContainerDep) -> Response:
    """Prometheus text: requests, claims, each follower's position and lag, budgets."""
    gauges = container.metrics
    gauges.streams_open.set(request.app.state.streams.open)
    try:
        for status in projection_statuses(container):
            gauges.follower_position.labels(status["name"]).set(status["position"])
            gauges.follower_lag.labels(status["name"]).set(status["lag"])
            gauges.log_head.set(status["head"])
        for follower in container.followers:
            gauges.follower_failures.labels(follower.name).set(follower.state.failures)
        states = {"ok": 0, "alerting": 1, "halted": 2}
        for budget in container.queries.budgets(window_of(container.app.clock())):
            gauges.spend.labels(budget.scope).set(float(budget.spent_usd))
            gauges.breaker.labels(budget.scope).set(states[budget.state])
            gauges.budget_alerts.labels(budget.scope).set(budget.alerts)
            gauges.budget_halts.labels(budget.scope).set(budget.halts)
    except Exception as error:  # metrics must answer even when the database does not
        log.warning("metrics_without_positions", error=str(error))
    return Response(generate_latest(gauges.registry), media_type=CONTENT_TYPE_LATEST)
