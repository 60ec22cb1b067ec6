"""Request and response bodies of the v1 contract."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from domain.values import Completion, Failure, NewItem, Report, TopicFacts

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Role = Annotated[str, Field(pattern=r"^(admin|operator|auditor|agent)$")]
ScopeName = Annotated[
    str,
    StringConstraints(
        max_length=107, pattern=r"^(global|eval|(stage|agent|topic):[A-Za-z0-9_.:-]{1,100})$"
    ),
]
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]{1,200}$")]
JsonObject = dict[str, Any]
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")
ITEMS_CURSOR = r"^[0-9]{1,17}\.[0-9a-f]{32}$"


def _timestamp(value: Any) -> Any:
    """An RFC 3339 date-time (without an offset: UTC), and nothing else pydantic would take
    for one (a number of seconds, a date alone)."""
    if not isinstance(value, str) or not RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time, e.g. 2026-01-02T03:04:05Z")
    moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


class Body(BaseModel):
    # Strict: a body is taken as its schema types it (no "1" for 1, no false for 0), so what
    # the OpenAPI refuses the service refuses too.
    model_config = ConfigDict(extra="forbid", strict=True)


# 3.0 is the integer 3 in JSON (as WholeNumber below says for the report bodies).
LeaseCap = Annotated[
    int,
    BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v),
    Field(ge=1, le=100_000),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100_000}),
]


class AgentCreate(Body):
    name: Name
    role: Role
    stages: list[Name] = Field(default_factory=list, max_length=100)
    max_concurrent_leases: LeaseCap | None = None


class ItemCreate(Body):
    pipeline: Name
    topic: Name
    title: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    input: JsonObject = Field(default_factory=dict)

    def new_item(self, fingerprint: str) -> NewItem:
        return NewItem(self.pipeline, self.topic, self.title, self.input, fingerprint)


class Tokens(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    in_: int = Field(alias="in", serialization_alias="in")
    out: int


class ItemOut(BaseModel):
    id: str
    pipeline: str
    pipeline_version: int
    topic: str
    title: str
    stage: str
    status: str
    visit: int
    attempt: int
    agent: str | None
    lease_expires_at: datetime | None
    not_before: datetime | None
    visits: dict[str, int]
    transitions: int
    cost_usd: float
    tokens: Tokens
    version: int
    position: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    eval: bool = Field(False, description="a case of an eval run, not production work")


class ItemListOut(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


class ClaimRequest(Body):
    stage: Name
    wait_seconds: float = Field(default=0, ge=0, le=30)


class LeaseOut(BaseModel):
    id: str
    stage: str
    attempt: int
    expires_at: datetime


class ClaimOut(BaseModel):
    item: ItemOut
    lease: LeaseOut
    input: JsonObject
    outputs: JsonObject
    eval: bool = Field(False, description="the item is a case of an eval run")


class HeartbeatOut(BaseModel):
    expires_at: datetime
    version: int
    position: int


def _whole(value: Any) -> Any:
    """JSON has one kind of number: 3.0 is the integer 3, as JSON Schema says (true is not)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = BeforeValidator(_whole)


def _amount_text(limit: int) -> str:
    return rf"^({limit}(\.0+)?|[0-9]{{1,{len(str(limit)) - 1}}}(\.[0-9]+)?)$"


def amount(limit: int) -> BeforeValidator:
    """A sum of dollars from 0 to `limit`: a JSON number, or its decimal text (which keeps every
    digit), exactly as `amount_schema` says — no other string, no boolean."""
    text = re.compile(_amount_text(limit))

    def parse(value: Any) -> Any:
        if isinstance(value, str) and text.match(value):
            return Decimal(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Decimal(str(value))
        raise ValueError(f"must be a number from 0 to {limit}, or its decimal text")

    return BeforeValidator(parse)


def amount_schema(limit: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": limit},
                {"type": "string", "pattern": _amount_text(limit)},
            ]
        }
    )


Money = Annotated[Decimal, amount(1_000_000), Field(ge=0, le=1_000_000), amount_schema(1_000_000)]
Count = Annotated[
    int,
    WholeNumber,
    Field(ge=0, le=10**12),
    # The validator before the bounds keeps pydantic from stating them as JSON Schema does.
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 10**12}),
]


class ReportBody(Body):
    """What a run cost and how it went; every report on a lease carries it."""

    cost_usd: Money = Decimal(0)
    tokens_in: Count = 0
    tokens_out: Count = 0
    duration_ms: Count = 0
    trace: Any = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="the model that did the work, for the run and its trace"
    )

    def report(self) -> Report:
        return Report(
            self.cost_usd,
            self.tokens_in,
            self.tokens_out,
            self.duration_ms,
            self.trace,
            self.model,
        )


class CompleteRequest(ReportBody):
    outcome: Name | None = None
    output: Any = None

    def completion(self) -> Completion:
        return Completion(self.output, self.outcome, self.report())


class FailRequest(ReportBody):
    error: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
    retryable: bool = True

    def failure(self) -> Failure:
        return Failure(self.error, self.retryable, self.report())


class StageReportOut(BaseModel):
    item_id: str
    stage: str
    status: str
    version: int
    position: int


class TopicPut(Body):
    owner: Annotated[str, StringConstraints(max_length=200)] | None = None
    priority: Annotated[int, WholeNumber] = Field(default=0, ge=-1_000_000, le=1_000_000)
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100
    )
    metadata: JsonObject = Field(default_factory=dict)

    def facts(self) -> TopicFacts:
        return TopicFacts(self.owner, self.priority, tuple(self.tags), self.metadata)


class EventOut(BaseModel):
    position: int
    version: int
    item_id: str | None = None
    aggregate_id: str
    type: str
    at: datetime
    actor: str | None
    caused_by: str | None
    data: JsonObject


class EventListOut(BaseModel):
    events: list[EventOut]
    last_position: int


class ItemEventsOut(BaseModel):
    events: list[EventOut]
    next_cursor: str | None = Field(description="pass back as cursor for the next page")


class RunOut(BaseModel):
    lease_id: str
    agent: str
    stage: str
    attempt: int
    claimed_at: datetime
    finished_at: datetime | None
    result: str = Field(description="running, completed, failed, expired or revoked")
    outcome: str | None
    error: str | None
    cost_usd: float
    tokens: Tokens
    duration_ms: int | None
    trace: Any
    model: str | None = None


class ItemRunsOut(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(description="pass back as cursor for the next page")


class PipelineOut(BaseModel):
    name: str
    version: int
    spec: JsonObject
    position: int | None = None
    updated_at: datetime
    active_version: int | None = Field(
        None, description="the version new items start on (the latest unless an eval gate waits)"
    )


# -- eval runs -----------------------------------------------------------------------------------

CheckKind = Annotated[
    str, Field(pattern=r"^(contains|regex|json_schema|max_cost_usd|max_tokens|score)$")
]


class EvalCheckIn(Body):
    kind: CheckKind = Field(
        description="contains (value: text), regex (value: pattern), json_schema (value: a "
        "schema), max_cost_usd, max_tokens (the whole item's), score (value: the least score a "
        'scorer stage\'s {"score": x} output may have)'
    )
    value: Any = Field(description="what the check compares with (see kind)")
    stage: Name | None = Field(None, description="the stage whose output it reads")


# A character no engine calls a space: `\s` differs between pydantic's Rust regex, JSON Schema's
# ECMA regex and Python's `re` (U+0085, U+FEFF, U+001C to U+001F), so those are named outright.
VISIBLE = r"[^\s\x1c-\x1f\x85\ufeff]"


class EvalCaseIn(Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=VISIBLE)]
    input: JsonObject = Field(default_factory=dict)
    stage: Name | None = Field(None, description="the stage its checks read (default: the last)")
    checks: list[EvalCheckIn] = Field(default_factory=list, max_length=20)


class EvalCreate(Body):
    version: Annotated[int, Field(ge=1, le=2**31 - 1), WholeNumber]
    cases: list[EvalCaseIn] = Field(min_length=1, max_length=100)
    topic: Name = "eval"


class EvalStartedOut(BaseModel):
    id: str
    pipeline: str
    version: int
    items: list[str]
    position: int


class EvalCheckOut(BaseModel):
    kind: str
    stage: str | None
    passed: bool
    detail: str


class EvalCaseOut(BaseModel):
    name: str
    item_id: str
    status: str = Field(description="running, passed or failed")
    item_status: str
    detail: str
    checks: list[EvalCheckOut]
    cost_usd: float
    tokens: Tokens


class EvalComparisonOut(BaseModel):
    active_version: int
    active_run: str | None
    pass_rate: float | None
    cost_per_item_usd: float | None
    eval_gate: JsonObject | None
    meets_gate: bool | None = Field(
        description="whether this run meets the active version's eval gate (null: no gate, or "
        "the run is still going)"
    )
    refusal: str | None


class EvalRunOut(BaseModel):
    id: str
    pipeline: str
    version: int
    topic: str
    status: str = Field(description="running or finished")
    total: int
    passed: int
    failed: int
    pass_rate: float
    cost_usd: float
    cost_per_item_usd: float
    started_by: str
    started_at: datetime
    position: int
    cases: list[EvalCaseOut] | None = None
    compared_with_active: EvalComparisonOut | None = None


class EvalRunListOut(BaseModel):
    runs: list[EvalRunOut]


class ActivationOut(BaseModel):
    name: str
    active_version: int
    changed: bool
    forced: bool
    position: int


class OperatorCommandOut(BaseModel):
    item: ItemOut


class RewindRequest(Body):
    stage: Name
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class ForkRequest(Body):
    stage: Name
    pipeline_version: Annotated[int | None, WholeNumber] = Field(default=None, ge=1, le=2**31 - 1)


class ForkedItemOut(ItemOut):
    forked_from: str


# -- problems ------------------------------------------------------------------------------------


class ProblemEntry(BaseModel):
    """One place a request was refused at: `body.input.key`, `query.limit`, `path`, …"""

    location: str
    message: str
    type: str | None = None


class ProblemOut(BaseModel):
    """An RFC 9457 problem, the body of every refusal (`application/problem+json`)."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    code: str = Field(
        description="machine-readable: unauthorized, forbidden, not_found, validation_error, "
        "version_conflict, lease_lost, idempotency_mismatch, already_exists, invalid_state, "
        "position_ahead, budget_halted, payload_too_large, request_timeout, method_not_allowed, "
        "too_many_requests, unavailable, internal"
    )
    errors: list[ProblemEntry] | None = Field(
        default=None, description="with validation_error: each place refused"
    )
    scope: str | None = Field(default=None, description="with budget_halted: the halted scope")
    spent_usd: float | None = Field(default=None, description="with budget_halted")
    halt_usd: float | None = Field(default=None, description="with budget_halted")
    window: str | None = Field(default=None, description="with budget_halted: the UTC day")
    position: int | None = Field(
        default=None, description="with unavailable: where a projection behind has reached"
    )


# -- answers that had no model -------------------------------------------------------------------


class ItemCounts(BaseModel):
    total: int
    by_status: dict[str, int]
    by_stage: dict[str, int]


class TopicOut(BaseModel):
    name: str
    defined: bool = Field(description="whether the topic was described (PUT), not only used")
    owner: str | None
    priority: int
    tags: list[str]
    metadata: JsonObject
    items: ItemCounts
    cost_usd: float
    tokens: Tokens
    last_activity_at: datetime | None
    created_at: datetime
    updated_at: datetime
    position: int | None = Field(default=None, description="with PUT: the write's log position")


class TopicListOut(BaseModel):
    topics: list[TopicOut]


class AgentOut(BaseModel):
    """An identity as a write left it; `token` only on registration and rotation, once."""

    id: str
    name: str
    role: str
    stages: list[str]
    disabled: bool
    token: str | None
    position: int
    max_concurrent_leases: int | None = None


class AgentActivityOut(BaseModel):
    id: str
    name: str
    role: str
    stages: list[str]
    disabled: bool
    claims: int
    completions: int
    failures: int
    expired: int
    cost_usd: float
    tokens: Tokens
    last_active_at: datetime | None
    created_at: datetime
    spent_today_usd: float


class AgentListOut(BaseModel):
    agents: list[AgentActivityOut]


class BudgetOut(BaseModel):
    scope: str
    alert_usd: float
    halt_usd: float
    spent_usd: float
    window: str = Field(description="the UTC day the spend is counted in")
    state: str = Field(pattern=r"^(ok|alerting|halted)$")
    reset_this_window: bool
    alerts: int
    halts: int
    position: int | None = Field(default=None, description="with a write: its log position")


class AuditEntryOut(BaseModel):
    position: int
    at: datetime
    actor: str | None
    type: str
    aggregate: str
    aggregate_id: str
    version: int
    item_id: str | None
    caused_by: str | None


class AuditOut(BaseModel):
    entries: list[AuditEntryOut]
    next_after: int | None = Field(description="pass back as after for the next page")


class DeadLetterOut(BaseModel):
    position: int
    event_type: str
    error: str
    status: str
    first_seen: datetime
    attempts: int
    reason: str | None
    skipped_by: str | None
    skipped_at: datetime | None


class ProjectionOut(BaseModel):
    name: str
    position: int
    head: int
    lag: int
    running: bool | None = Field(description="None when no follower of it runs in this process")
    standby: bool | None
    error: str | None
    dead_letters: list[DeadLetterOut]


class FollowerOut(BaseModel):
    name: str
    running: bool
    standby: bool
    position: int
    failures: int
    error: str | None


class HealthOut(BaseModel):
    status: str = Field(pattern=r"^(ready|not_ready)$")
    checks: dict[str, str] = Field(description="each check: ok, or its error")
    followers: list[FollowerOut]
    claims_waiting: int


class ReadinessOut(BaseModel):
    status: str = Field(pattern=r"^(ready|not_ready)$")
    checks: dict[str, str] = Field(description="each check: ok or failing")


class LivenessOut(BaseModel):
    status: str
