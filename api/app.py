"""The FastAPI app; its lifespan builds and starts the process's Container from Settings."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import anyio.to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.console import install_console
from api.console.session import Sessions
from api.container import Container
from api.errors import install_error_handlers
from api.metrics import Metrics
from api.middleware import DoorLimits, RequestContextMiddleware
from api.openapi import install_openapi
from api.routes import (
    agents,
    audit,
    budgets,
    evals,
    health,
    items,
    log,
    pipelines,
    reports,
    schedules,
    stream,
    topics,
    webhooks,
    work,
)
from api.settings import Settings
from api.stream import StreamHub
from domain.application import utc_now

API_DESCRIPTION = (
    "stateowner owns the shared state of a team of AI agents: every piece of work is an "
    "append-only event on an item; status and topic tables are projections of the log."
)


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    metrics = Metrics()
    streams = StreamHub(settings.max_streams, settings.stream_keepalive_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        # A thread woken by the database waits for the GIL at most this long (default 5 ms).
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        container = Container(settings, clock, metrics)
        app.state.container = container
        try:
            await run_in_threadpool(
                container.start,
                projections=settings.run_projections,
                bus=settings.run_bus,
                ready_signal=True,
            )
            yield
        finally:
            streams.close()
            await run_in_threadpool(container.close)

    app = FastAPI(
        title="stateowner",
        version="1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # /docs is served from the package's own files (install_console), never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    secret, admin_token = settings.session_secret, settings.admin_token
    app.state.sessions = Sessions.from_secret(
        secret.get_secret_value() if secret else None,
        settings.session_minutes,
        admin_token.get_secret_value() if admin_token else None,
    )
    app.state.streams = streams
    install_error_handlers(app)
    routers = (agents, pipelines, evals, items, work, topics, budgets, audit, log, stream, health)
    for module in (*routers, schedules, reports):
        app.include_router(module.router)
    app.include_router(webhooks.router)
    install_console(app)
    install_openapi(app)
    limits = DoorLimits(
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        max_json_depth=settings.max_json_depth,
    )
    app.add_middleware(RequestContextMiddleware, limits=limits, metrics=metrics)
    return app
