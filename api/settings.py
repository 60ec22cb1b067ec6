"""Configuration, read once from the environment (prefix STATEOWNER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STATEOWNER_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="postgresql://… of an external server; unset: embedded PostgreSQL"
    )
    data_dir: Path = Field(
        default=Path("var"), description="where the embedded PostgreSQL keeps its data"
    )
    admin_token: SecretStr | None = Field(default=None, description="a built-in admin bearer token")
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="larger request bodies get 413"
    )
    max_trace_bytes: int = Field(default=256 * 1024, gt=0, description="larger run traces get 413")
    run_projections: bool = Field(
        default=True, description="run the projection followers in `serve`"
    )
    run_bus: bool = Field(default=True, description="run the bus follower in `serve`")
    projections_gather_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="woken by a write, the projections wait this long for more before reading",
    )
    decide_at_once: bool = Field(
        default=True,
        description="decide what follows a lease's end in the same append; false: the bus decides",
    )
    read_wait_seconds: float = Field(
        default=5.0, gt=0, description="how long a read with min_position waits for its projection"
    )
    sweep_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often the sweeper looks for expired leases"
    )
    worker_threads: int = Field(
        default=200, ge=8, le=2000, description="threads for request handlers' database work"
    )
    max_waiting_claims: int = Field(
        default=5000, ge=1, description="long-poll claims waiting at once; beyond: 429"
    )
    max_waiting_claims_per_agent: int = Field(
        default=200, ge=1, description="long-poll claims one agent may have waiting; beyond: 429"
    )
    max_json_depth: int = Field(
        default=64, ge=4, le=1000, description="deepest nesting a JSON or TOML body may have"
    )
    max_stages: int = Field(default=100, ge=1, description="stages a pipeline spec may have")
    max_routes: int = Field(
        default=500, ge=0, description="outcome routes (`on` entries) a pipeline spec may have"
    )
    max_spec_bytes: int = Field(default=64 * 1024, ge=256, description="a pipeline spec's size")
    max_eval_cases: int = Field(
        default=100, ge=1, le=100, description="cases one eval run may have (each an item)"
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a request's head must arrive within this, or it closes"
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="a request's body must arrive within this, or 408"
    )
    keep_alive_seconds: float = Field(
        default=5.0, gt=0, description="an idle keep-alive connection closes after this"
    )
    gil_switch_interval_ms: float = Field(
        default=0.5,
        gt=0,
        le=100,
        description="Python thread switch interval; lower wakes waiters sooner",
    )
    pool_size: int = Field(default=8, gt=0, description="database connections per process")
    startup_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="at start, wait this long for an unreachable database before giving up",
    )
    log_json: bool | None = Field(
        default=None, description="JSON logs; default: when not on a terminal"
    )
    log_level: str = Field(default="info")
    session_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="signs console session cookies; unset: a random secret per process",
    )
    session_minutes: int = Field(
        default=480, ge=1, le=60 * 24 * 30, description="how long a console session lasts"
    )
    max_streams: int = Field(
        default=100, ge=1, le=10_000, description="concurrent /v1/stream connections per process"
    )
    stream_keepalive_seconds: float = Field(
        default=15.0, gt=0, le=300, description="an idle stream sends a comment this often"
    )
    otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="an OTLP/HTTP collector (http://host:4318): finished runs are exported to it",
    )
    schedule_grace_seconds: float = Field(
        default=60.0,
        gt=0,
        le=7 * 24 * 3600,
        description="a schedule's tick older than this when fired is late: catch_up decides",
    )
    otlp_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="how long one export to the collector may take"
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=100, description="tries of a webhook delivery before it is dead"
    )
    webhook_backoff_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="wait after a delivery's first failure (doubling)"
    )
    webhook_max_backoff_seconds: float = Field(
        default=600.0, gt=0, le=86400, description="the longest wait between a delivery's tries"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="how long one post to a webhook may take"
    )
    webhook_workers: int = Field(
        default=16, ge=1, le=1000, description="webhooks posted to at once (one worker each)"
    )
    follower_stall_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="a follower behind the log that long is stalled"
    )
