"""Serving the app with uvicorn, with every wait on a client bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

import h11
import structlog
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.settings import Settings
from store.database import resolve

log = structlog.get_logger(__name__)

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


def _config(app: FastAPI, settings: Settings, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings.header_timeout_seconds),
        timeout_keep_alive=int(max(1, settings.keep_alive_seconds)),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_config=None,
        access_log=False,
    )


def serve(app: FastAPI, settings: Settings, host: str, port: int) -> None:
    Server(_config(app, settings, host, port), app).run()


# A process that dies sooner than this after its start is restarted only after a pause, so a
# process that cannot start does not spin.
QUICK_DEATH_SECONDS = 5.0


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound and listening, that child processes inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it a response's second write waits out the client's delayed ACK (40 ms).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def serve_processes(
    make_app: Callable[[Settings], FastAPI],
    settings: Settings,
    host: str,
    port: int,
    processes: int,
) -> None:
    """Serve from several processes on one listening socket: Python runs one thread at a time
    per process, so one process cannot use more than one core. The parent binds the socket,
    forks the servers before it starts any thread, restarts one that dies, and passes SIGTERM
    and SIGINT on. The children share what must agree between them: the database (an embedded
    one is started here, once) and the console's session secret."""
    if not settings.database_url:
        database = resolve(None, settings.data_dir)
        os.environ["STATEOWNER_DATABASE_URL"] = database.conninfo
    if settings.session_secret is None:
        os.environ["STATEOWNER_SESSION_SECRET"] = secrets.token_urlsafe(32)
    listener = listening_socket(host, port)

    def start_one() -> int:
        pid = os.fork()
        if pid == 0:  # the child: a whole server of its own, on the shared socket
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                child_settings = Settings()
                app = make_app(child_settings)
                Server(_config(app, child_settings, host, port), app).run(sockets=[listener])
            except BaseException:  # the parent restarts it; say why it ended
                log.exception("server_process_failed")
                code = 1
            finally:
                os._exit(code)
        return pid

    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    children = {start_one(): time.monotonic() for _ in range(processes)}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving", host=host, port=port, processes=processes, pids=sorted(children))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        log.error("server_process_died", pid=pid, status=status)
        if time.monotonic() - started < QUICK_DEATH_SECONDS:
            time.sleep(QUICK_DEATH_SECONDS)
        if not stopping:
            children[start_one()] = time.monotonic()
    listener.close()
