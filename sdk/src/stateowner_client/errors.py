"""The service's problems (RFC 9457 bodies) as exceptions, one class per machine-readable code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class StateownerError(Exception):
    """Anything this client raises on purpose."""


class TransportError(StateownerError):
    """The request did not get an answer: connection refused or lost, or a time-out."""


class ProblemError(StateownerError):
    """The service answered with a problem: `status`, `code` and the whole `body` are kept."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        body: Mapping[str, Any],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = str(body.get("title", ""))
        self.body = dict(body)
        self.retry_after = retry_after


class Unauthorized(ProblemError):
    """401: no token, an unknown one, or one of a disabled or rotated agent."""


class Forbidden(ProblemError):
    """403: the role or the stage scope does not allow it, or the lease is another agent's."""


class NotFound(ProblemError):
    """404."""


class MethodNotAllowed(ProblemError):
    """405."""


class Conflict(ProblemError):
    """409 of a kind this client has no class for."""


class VersionConflict(Conflict):
    """409: a concurrent update won; reading again and retrying is safe."""


class LeaseLost(Conflict):
    """409: the lease expired or is no longer the item's current one; the work's result is moot."""


class IdempotencyMismatch(Conflict):
    """409: the key (or the lease) was used with another body first."""


class AlreadyExists(Conflict):
    """409: the name is taken."""


class InvalidState(Conflict):
    """409: the item's state does not allow the command."""


class EvalGateRefused(Conflict):
    """409: the version's eval results do not meet the active version's eval gate."""


class PayloadTooLarge(ProblemError):
    """413: the body, or a run's trace, is over the service's limit."""


class ValidationError(ProblemError):
    """422: the request is malformed, or a pipeline spec is invalid."""


class BudgetHalted(ProblemError):
    """423: a budget's circuit breaker is open over this claim."""

    @property
    def scope(self) -> str:
        return str(self.body.get("scope", ""))

    @property
    def spent_usd(self) -> float:
        return float(self.body.get("spent_usd", 0))

    @property
    def halt_usd(self) -> float:
        return float(self.body.get("halt_usd", 0))

    @property
    def window(self) -> str:
        return str(self.body.get("window", ""))


class TooManyRequests(ProblemError):
    """429: over the service's cap (too many waiting claims); wait `retry_after` seconds."""


class ServerError(ProblemError):
    """5xx other than 503."""


class Unavailable(ServerError):
    """503: the database or a projection is behind or down; wait `retry_after` seconds."""


BY_CODE: dict[str, type[ProblemError]] = {
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "version_conflict": VersionConflict,
    "lease_lost": LeaseLost,
    "idempotency_mismatch": IdempotencyMismatch,
    "already_exists": AlreadyExists,
    "invalid_state": InvalidState,
    "eval_gate": EvalGateRefused,
    "payload_too_large": PayloadTooLarge,
    "validation_error": ValidationError,
    "budget_halted": BudgetHalted,
    "too_many_requests": TooManyRequests,
    "unavailable": Unavailable,
}

# A body without a known code (a proxy's page, a newer code) still gets the class its status means.
BY_STATUS: dict[int, type[ProblemError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    423: BudgetHalted,
    429: TooManyRequests,
    503: Unavailable,
}

# What a caller may simply try again after a pause: nothing was decided.
RETRYABLE = (TransportError, Unavailable, TooManyRequests, ServerError)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: rare enough that the caller's own backoff will do


def problem_from(response: httpx.Response) -> ProblemError:
    """The exception a non-success answer means, with the body kept whatever its shape."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text[:500]}
    code = str(body.get("code") or "")
    cls = BY_CODE.get(code) or BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ProblemError
    detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
    return cls(
        response.status_code,
        code or f"http_{response.status_code}",
        detail,
        body,
        _retry_after(response),
    )
