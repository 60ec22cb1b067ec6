"""Request and response bodies of the v1 contract."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.values import Completion, Failure, NewItem, Report, TopicFacts

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Role = Annotated[str, Field(pattern=r"^(admin|operator|auditor|agent)$")]
JsonObject = dict[str, Any]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentCreate(Body):
    name: Name
    role: Role
    stages: list[Name] = Field(default_factory=list, max_length=100)


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


class HeartbeatOut(BaseModel):
    expires_at: datetime
    version: int
    position: int


Money = Annotated[Decimal, Field(ge=0, le=1_000_000, max_digits=20, decimal_places=10)]
Count = Annotated[int, Field(ge=0, le=10**12)]


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
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
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


class OperatorCommandOut(BaseModel):
    item: ItemOut
