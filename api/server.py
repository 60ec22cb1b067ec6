"""Serving the app with uvicorn, with every wait on a client bounded."""

from __future__ import annotations

import asyncio
from types import FrameType

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.settings import Settings

# After this, requests still running are cancelled: a stop never hangs on a slow one.
GRACEFUL_SHUTDOWN_SECONDS = 10


def guarded_protocol(header_timeout_seconds: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head does not arrive
    within the timeout: a client that connects and sends nothing, or sends half a head and
    stalls, no longer holds a connection for ever. (uvicorn bounds only idle keep-alive.)"""

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self._head_timer is None:
                    self._arm_head_timer()  # a new request has begun to arrive
            else:
                self._disarm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(header_timeout_seconds, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


class Server(uvicorn.Server):
    """uvicorn waits for open responses before it shuts down: on SIGTERM or SIGINT, waiting
    long-poll claims answer at once (204) and event streams end, instead of holding the
    shutdown for their whole long poll, or for ever."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.fastapi_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.fastapi_app.state.streams.close()
        container = getattr(self.fastapi_app.state, "container", None)
        if container is not None and container.started:
            container.claims.close()
        super().handle_exit(sig, frame)


def serve(app: FastAPI, settings: Settings, host: str, port: int) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings.header_timeout_seconds),
        timeout_keep_alive=int(max(1, settings.keep_alive_seconds)),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_config=None,
        access_log=False,
    )
    Server(config, app).run()
