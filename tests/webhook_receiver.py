"""A real HTTP receiver on loopback for the webhook tests: each path plays an endpoint (one that
fails a few times first, one that is down, one too slow to answer) and keeps what it got."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


@dataclass
class Endpoint:
    """How a path answers: `failures` 500s first (then 200), `down` (503 always), or `delay`
    seconds before answering."""

    failures: int = 0
    down: bool = False
    delay: float = 0.0
    answered: int = field(default=0)


class WebhookReceiver:
    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def endpoint(self, path: str, **how: Any) -> str:
        self.endpoints[path] = Endpoint(**how)
        return self.url(path)

    def heal(self, path: str) -> None:
        self.endpoints[path] = Endpoint()

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.monotonic()
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, arrived)
                    )
                    how = receiver.endpoints.get(self.path, Endpoint())
                    how.answered += 1
                    failing = how.down or how.answered <= how.failures
                if how.delay:
                    time.sleep(how.delay)
                self.send_response(503 if how.down else 500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]
