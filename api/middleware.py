"""Pure ASGI middleware: request ids, the body-size limit, and one canonical log line per request."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem_response
from api.metrics import Metrics

log = structlog.get_logger("stateowner.request")


class BodyTooLarge(Exception):
    pass


# A JSON \u0000 escape: one not itself escaped, i.e. after an even run of backslashes.
JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def carries_nul(scope: Scope, body: bytes) -> bool:
    """PostgreSQL text and jsonb cannot hold NUL: refuse it at the door, not in a projection."""
    return (
        "\x00" in scope["path"]
        or b"%00" in scope.get("query_string", b"")
        or b"\x00" in body
        or JSON_NUL.search(body) is not None
    )


class RequestContextMiddleware:
    """Tags the request with an id, refuses oversize bodies with 413 and logs one line at the end."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def _read_body(self, receive: Receive) -> bytes:
        """Buffer the body (it is bounded by the limit), refusing it once it grows past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        if len(request_id) > 128:
            request_id = uuid.uuid4().hex
        context: dict[str, Any] = {"request_id": request_id, "principal": None, "item_id": None}
        scope.setdefault("state", {})["context"] = context
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        declared = headers.get("content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise BodyTooLarge
            body = await self._read_body(receive)
            if carries_nul(scope, body):
                response = problem_response(
                    422,
                    "validation_error",
                    "Invalid request",
                    "the request carries a NUL character (\\u0000), which cannot be stored",
                )
                await response(scope, receive, send_with_id)
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_with_id)
        except BodyTooLarge:
            response = problem_response(
                413,
                "payload_too_large",
                "Payload too large",
                f"the request body exceeds {self.max_body_bytes} bytes",
            )
            await response(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(
                scope["method"], route_path, str(status_holder["status"])
            ).inc()
            self.metrics.latency.labels(scope["method"], route_path).observe(duration)
            log.info(
                "request",
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                route=route_path,
                status=status_holder["status"],
                principal=context["principal"],
                item_id=context["item_id"],
                duration_ms=round(duration * 1000, 2),
            )
