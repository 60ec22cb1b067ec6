"""The v1 bodies as frozen dataclasses. Fields the client does not know are ignored (the service
may add some at any time) and kept whole in `raw`; fields it knows but the answer lacks take
their defaults."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

JsonObject = Mapping[str, Any]


@dataclass(frozen=True)
class Tokens:
    in_: int = 0
    out: int = 0


@dataclass(frozen=True)
class Item:
    id: str
    pipeline: str = ""
    pipeline_version: int = 0
    topic: str = ""
    title: str = ""
    stage: str = ""
    status: str = ""
    visit: int = 0
    attempt: int = 0
    agent: str | None = None
    lease_expires_at: datetime | None = None
    not_before: datetime | None = None
    visits: dict[str, int] = field(default_factory=dict)
    transitions: int = 0
    cost_usd: float = 0.0
    tokens: Tokens = field(default_factory=Tokens)
    version: int = 0
    position: int = 0
    created_by: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    forked_from: str | None = None  # on a fork's answer: the item it was forked from
    eval: bool = False  # a case of an eval run, not production work
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Lease:
    id: str
    stage: str
    attempt: int
    expires_at: datetime
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Claim:
    """A lease on one stage of one item, with what the stage works from."""

    item: Item
    lease: Lease
    input: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    eval: bool = False
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Heartbeat:
    expires_at: datetime
    version: int = 0
    position: int = 0
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class StageReport:
    """The answer to a completion or a failure: where the item stands after it."""

    item_id: str
    stage: str = ""
    status: str = ""
    version: int = 0
    position: int = 0
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Event:
    position: int
    type: str
    version: int = 0
    item_id: str | None = None
    aggregate_id: str = ""
    aggregate: str = ""
    at: datetime | None = None
    actor: str | None = None
    caused_by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    last_position: int
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Run:
    """One attempt at one stage, from its claim to how its lease ended."""

    lease_id: str
    agent: str = ""
    stage: str = ""
    attempt: int = 0
    claimed_at: datetime | None = None
    finished_at: datetime | None = None
    result: str = ""
    outcome: str | None = None
    error: str | None = None
    cost_usd: float = 0.0
    tokens: Tokens = field(default_factory=Tokens)
    duration_ms: int | None = None
    trace: Any = None
    model: str | None = None
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Pipeline:
    name: str
    version: int
    spec: dict[str, Any] = field(default_factory=dict)
    position: int | None = None
    updated_at: datetime | None = None
    active_version: int | None = None  # the version new items start on
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EvalStarted:
    """An eval run just started: its id, and its cases' eval items."""

    id: str
    pipeline: str = ""
    version: int = 0
    items: list[str] = field(default_factory=list)
    position: int = 0
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EvalCheck:
    kind: str
    stage: str | None = None
    passed: bool = False
    detail: str = ""


@dataclass(frozen=True)
class EvalCase:
    name: str
    item_id: str = ""
    status: str = ""  # running, passed or failed
    item_status: str = ""
    detail: str = ""
    checks: list[EvalCheck] = field(default_factory=list)
    cost_usd: float = 0.0
    tokens: Tokens = field(default_factory=Tokens)


@dataclass(frozen=True)
class EvalRun:
    """An eval run's results (`cases` only when one run is read)."""

    id: str
    pipeline: str = ""
    version: int = 0
    status: str = ""  # running or finished
    total: int = 0
    passed: int = 0
    failed: int = 0
    pass_rate: float = 0.0
    cost_usd: float = 0.0
    cost_per_item_usd: float = 0.0
    started_by: str = ""
    started_at: datetime | None = None
    position: int = 0
    cases: list[EvalCase] | None = None
    # Beside the active version's latest finished run, and what its eval gate says of this one.
    compared_with_active: dict[str, Any] | None = None
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Activation:
    name: str
    active_version: int = 0
    changed: bool = False
    forced: bool = False
    position: int = 0
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Agent:
    """An identity; `token` is set only in the answer that creates or rotates it."""

    name: str
    id: str = ""
    role: str = ""
    stages: list[str] = field(default_factory=list)
    disabled: bool = False
    token: str | None = None
    max_concurrent_leases: int | None = None
    claims: int = 0
    completions: int = 0
    failures: int = 0
    expired: int = 0
    cost_usd: float = 0.0
    tokens: Tokens = field(default_factory=Tokens)
    spent_today_usd: float = 0.0
    last_active_at: datetime | None = None
    created_at: datetime | None = None
    position: int | None = None
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Topic:
    name: str
    defined: bool = False
    owner: str | None = None
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    items: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0
    tokens: Tokens = field(default_factory=Tokens)
    last_activity_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    position: int | None = None
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Budget:
    scope: str
    alert_usd: float = 0.0
    halt_usd: float = 0.0
    spent_usd: float = 0.0
    window: str = ""
    state: str = "ok"
    reset_this_window: bool = False
    alerts: int = 0
    halts: int = 0
    position: int | None = None
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Schedule:
    """A timetable that creates one item per tick (`cron` or `every_seconds`)."""

    name: str
    pipeline: str = ""
    topic: str = ""
    title: str = ""
    cron: str | None = None
    every_seconds: int | None = None
    timezone: str = "UTC"
    input: JsonObject = field(default_factory=dict)
    enabled: bool = True
    catch_up: str = "skip"
    next_tick: datetime | None = None
    last_tick: datetime | None = None
    last_item_id: str | None = None
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    position: int | None = None
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class PipelineReport:
    """A pipeline's last days measured: the raw answer has every figure (`stages`,
    `end_to_end`, `criteria`, …); the headline ones are fields."""

    pipeline: str
    days: int = 0
    items: int = 0
    done: int = 0
    parked: int = 0
    halted: int = 0
    cancelled: int = 0
    success_rate: float | None = None
    cost_per_item_usd: float | None = None
    incidents: int = 0
    end_to_end: JsonObject = field(default_factory=dict)
    stages: JsonObject = field(default_factory=dict)
    criteria: list[JsonObject] = field(default_factory=list)


@dataclass(frozen=True)
class DeliveryCounts:
    pending: int = 0
    delivered: int = 0
    dead: int = 0


@dataclass(frozen=True)
class Webhook:
    """A webhook as the service shows it: never its secret."""

    name: str
    url: str = ""
    events: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    updated_by: str = ""
    deliveries: DeliveryCounts = field(default_factory=DeliveryCounts)
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Delivery:
    """One event posted (or to be posted) to a webhook: pending, delivered or dead."""

    id: str
    event_type: str = ""
    position: int | None = None
    item_id: str | None = None
    status: str = ""
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AuditEntry:
    position: int
    at: datetime | None = None
    actor: str | None = None
    type: str = ""
    aggregate: str = ""
    aggregate_id: str = ""
    version: int = 0
    item_id: str | None = None
    caused_by: str | None = None
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int = 0
    head: int = 0
    lag: int = 0
    running: bool | None = None
    standby: bool | None = None
    error: str | None = None
    dead_letters: list[JsonObject] = field(default_factory=list)
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OperatorHealth:
    """Readiness with its reasons (operators only): each check's error, each follower's state."""

    status: str
    checks: dict[str, str] = field(default_factory=dict)
    followers: list[JsonObject] = field(default_factory=list)
    claims_waiting: int = 0
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)

    @property
    def ready(self) -> bool:
        return self.status == "ready"


@dataclass(frozen=True)
class Health:
    status: str
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Readiness:
    status: str
    checks: dict[str, Any] = field(default_factory=dict)
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)

    @property
    def ready(self) -> bool:
        return self.status == "ready"


class DecodeError(ValueError):
    """An answer lacks a field the client cannot do without."""


def decode(cls: type[T], data: Any) -> T:
    """Build `cls` from a JSON object: known fields converted, unknown ones ignored."""
    if not isinstance(data, Mapping):
        raise DecodeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if spec.name == "raw":
            values["raw"] = dict(data)
            continue
        key = spec.name.rstrip("_")  # `in` is a keyword: Tokens.in_ reads "in"
        if key in data:
            values[spec.name] = _convert(hints[spec.name], data[key])
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise DecodeError(f"{cls.__name__}: the answer has no {key!r}")
    return cls(**values)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if hint is datetime:
        return datetime.fromisoformat(value) if isinstance(value, str) else value
    if hint is float and isinstance(value, int | float | str):
        return float(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return decode(hint, value)
    if origin is list and isinstance(value, list):
        (inner,) = typing.get_args(hint)
        return [_convert(inner, entry) for entry in value]
    if origin is dict and isinstance(value, dict):
        _, inner = typing.get_args(hint)
        return {key: _convert(inner, entry) for key, entry in value.items()}
    return value
