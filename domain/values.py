"""Values that travel together through commands: who caused a change, and what a report says."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar


@dataclass(frozen=True)
class By:
    """Who caused a change (`role:name`, or `system:…` for the service's own decisions) and what
    caused it (a request id, or `event:<position>` of the event a decision answers)."""

    actor: str
    caused_by: str


@dataclass(frozen=True)
class Claimant:
    """An agent as it stands when it asks: its name and the stages it may work on now."""

    name: str
    stages: frozenset[str]
    max_leases: int | None = None


@dataclass(frozen=True)
class Report:
    """What one run of a stage cost and how it went, as its agent reports it."""

    cost_usd: Decimal = Decimal(0)
    tokens_in: int = 0
    tokens_out: int = 0
    duration_ms: int = 0
    trace: Any = None
    model: str | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "cost_usd": self.cost_usd,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "duration_ms": self.duration_ms,
            "trace": self.trace,
            "model": self.model,
        }


@dataclass(frozen=True)
class Completion:
    """A stage done: the outcome that picks the next stage (None: the next in the list)."""

    kind: ClassVar[str] = "completed"
    output: Any = None
    outcome: str | None = None
    report: Report = field(default_factory=Report)

    def fields(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "output": self.output, **self.report.fields()}


@dataclass(frozen=True)
class Failure:
    """A stage failed; a retryable failure is tried again while attempts remain."""

    kind: ClassVar[str] = "failed"
    error: str
    retryable: bool = True
    report: Report = field(default_factory=Report)

    def fields(self) -> dict[str, Any]:
        return {"error": self.error, "retryable": self.retryable, **self.report.fields()}


@dataclass(frozen=True)
class NewItem:
    """What an item is asked to be: its pipeline, topic, title and input, and the digest of the
    request that asked (to tell a repeat from another request under the same idempotency key)."""

    pipeline: str
    topic: str
    title: str
    input: dict[str, Any]
    fingerprint: str = ""


@dataclass(frozen=True)
class TopicFacts:
    owner: str | None = None
    priority: int = 0
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """A budget's daily levels: crossing alert_usd warns, reaching halt_usd opens the breaker."""

    alert_usd: Decimal
    halt_usd: Decimal


@dataclass(frozen=True)
class Registration:
    """An identity to register: its role, the stages it may work on, its token's hash, and the
    digest of the request (to tell a repeat from a rival)."""

    name: str
    role: str
    stages: tuple[str, ...] = ()
    token_hash: str = ""
    request_digest: str = ""
    max_concurrent_leases: int | None = None
