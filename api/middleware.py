"""Pure ASGI middleware: request ids, the door (size, time, what the log cannot hold), one
canonical log line per request, and a problem for any unexpected error."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import door
from api.errors import problem_response
from api.metrics import Metrics

log = structlog.get_logger("stateowner.request")

# A caller's request id is echoed and recorded as the cause of its writes: only a plain one.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NOT_JSON_MEDIA = ("application/toml", "text/toml", "application/x-toml")


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


@dataclass(frozen=True)
class DoorLimits:
    max_body_bytes: int
    body_timeout_seconds: float
    max_json_depth: int


class RequestContextMiddleware:
    """Tags the request with an id, refuses at the door what must not come in (413, 408, 422),
    answers any unexpected error with a 500 problem while keeping the connection usable, and
    logs one line at the end."""

    def __init__(self, app: ASGIApp, limits: DoorLimits, metrics: Metrics) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics

    async def _read_body(self, receive: Receive) -> bytes:
        """Buffer the body (it is bounded by the limit), refusing it once it grows past the
        limit or stops arriving."""
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.limits.body_timeout_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                raise BodyTooSlow from None
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _refusals(self, scope: Scope, headers: dict[str, str], body: bytes) -> list[door.Refusal]:
        found = []
        if door.undecodable(scope.get("raw_path") or scope["path"].encode()):
            found.append(door.Refusal("path", "not UTF-8, or carries NUL", "bad_encoding"))
        if door.undecodable(scope.get("query_string", b"")):
            found.append(door.Refusal("query", "not UTF-8, or carries NUL", "bad_encoding"))
        key = headers.get("idempotency-key")
        if key is not None and not (key.isascii() and key.isprintable()):
            found.append(
                door.Refusal("header.Idempotency-Key", "must be printable ASCII", "bad_encoding")
            )
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and media not in NOT_JSON_MEDIA:
            found.extend(self._json_refusals(body))
        return found

    def _json_refusals(self, body: bytes) -> list[door.Refusal]:
        depth = self.limits.max_json_depth
        if door.deeper_than(body, depth):
            return [door.Refusal("body", f"nesting deeper than {depth} levels", "too_deep")]
        if b"\x00" in body:
            return [door.Refusal("body", "a NUL byte cannot be stored", "nul_character")]
        try:
            body.decode()
        except UnicodeDecodeError:
            return [door.Refusal("body", "JSON must be UTF-8", "bad_encoding")]
        try:
            parsed = door.parse_json(body)
        except (ValueError, RecursionError):
            return []  # not JSON: the route's own parser answers that
        return list(door.refusals(parsed, "body", depth))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given_id = headers.get("x-request-id", "")
        request_id = given_id if REQUEST_ID.match(given_id) else uuid.uuid4().hex
        context: dict[str, Any] = {"request_id": request_id, "principal": None, "item_id": None}
        scope.setdefault("state", {})["context"] = context
        response = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        async def answer(status: int, code: str, title: str, detail: str, **extra: Any) -> None:
            problem = problem_response(status, code, title, detail, **extra)
            await problem(scope, receive, send_with_id)

        declared = headers.get("content-length")
        try:
            if (
                declared is not None
                and declared.isdigit()
                and int(declared) > self.limits.max_body_bytes
            ):
                raise BodyTooLarge
            body = await self._read_body(receive)
            refused = self._refusals(scope, headers, body)
            if refused:
                detail = "; ".join(f"{r.location}: {r.message}" for r in refused[:5])
                await answer(
                    422,
                    "validation_error",
                    "Invalid request",
                    detail,
                    errors=[r.entry() for r in refused],
                )
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
            await answer(
                413,
                "payload_too_large",
                "Payload too large",
                f"the request body exceeds {self.limits.max_body_bytes} bytes",
            )
        except BodyTooSlow:
            await answer(
                408,
                "request_timeout",
                "Request timeout",
                f"the request body did not arrive within {self.limits.body_timeout_seconds:g} s",
            )
        except Exception:
            # Answered here, not re-raised: the server would otherwise drop the connection.
            log.exception("unhandled_error", request_id=request_id, path=scope["path"])
            if response["started"]:
                raise
            await answer(
                500,
                "internal",
                "Internal error",
                f"an unexpected error occurred; the log has it under request id {request_id}",
            )
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route_path, str(response["status"])).inc()
            self.metrics.latency.labels(scope["method"], route_path).observe(duration)
            log.info(
                "request",
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                route=route_path,
                status=response["status"],
                principal=context["principal"],
                item_id=context["item_id"],
                duration_ms=round(duration * 1000, 2),
            )
