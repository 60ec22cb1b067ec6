from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import AnyRuntimeDep
from api.routes.log import projection_statuses
from domain.guards import breaker_state, window_of
from projections import queries

log = structlog.get_logger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: AnyRuntimeDep) -> JSONResponse:
    """Readiness: the database answers and every follower this process runs is running."""
    checks: dict[str, Any] = {}
    try:
        with runtime.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    for follower in runtime.followers:
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
def metrics(runtime: AnyRuntimeDep) -> Response:
    """Prometheus text: requests, claims, and each follower's position and lag."""
    try:
        for status in projection_statuses(runtime):
            runtime.metrics.follower_position.labels(status["name"]).set(status["position"])
            runtime.metrics.follower_lag.labels(status["name"]).set(status["lag"])
            runtime.metrics.log_head.set(status["head"])
        for follower in runtime.followers:
            runtime.metrics.follower_failures.labels(follower.name).set(follower.state.failures)
        window = window_of(runtime.app.clock())
        with runtime.pool.connection() as conn:
            budgets = queries.budgets_with_spend(conn, window)
        states = {"ok": 0, "alerting": 1, "halted": 2}
        for row in budgets:
            scope = row["scope"]
            runtime.metrics.spend.labels(scope).set(float(row["spent_usd"]))
            state = breaker_state(
                row["spent_usd"],
                row["alert_usd"],
                row["halt_usd"],
                reset_this_window=row["reset_this_window"],
            )
            runtime.metrics.breaker.labels(scope).set(states[state])
            runtime.metrics.budget_alerts.labels(scope).set(row["alerts"])
            runtime.metrics.budget_halts.labels(scope).set(row["halts"])
    except Exception as error:  # metrics must answer even when the database does not
        log.warning("metrics_without_positions", error=str(error))
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
