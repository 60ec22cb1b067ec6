"""Prometheus metrics, one registry per application instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stateowner_http_requests_total",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stateowner_http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route"],
            registry=self.registry,
        )
        self.claims = Counter(
            "stateowner_claims_total",
            "Claim requests by result",
            ["stage", "result"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "stateowner_webhook_deliveries_total",
            "Webhook delivery attempts by result: delivered, failed (tried again), dead",
            ["webhook", "result"],
            registry=self.registry,
        )
        self.followers_stalled = Counter(
            "stateowner_followers_stalled_total",
            "FollowerStalled incidents raised",
            registry=self.registry,
        )
        self.follower_position = Gauge(
            "stateowner_follower_position",
            "Log position a follower reached",
            ["follower"],
            registry=self.registry,
        )
        self.follower_lag = Gauge(
            "stateowner_follower_lag",
            "Events a follower is behind the log head",
            ["follower"],
            registry=self.registry,
        )
        self.follower_failures = Gauge(
            "stateowner_follower_failures",
            "Failures a follower has retried",
            ["follower"],
            registry=self.registry,
        )
        self.spend = Gauge(
            "stateowner_spend_usd",
            "Spend today per budget scope",
            ["scope"],
            registry=self.registry,
        )
        self.breaker = Gauge(
            "stateowner_breaker_state",
            "Breaker per budget scope: 0 ok, 1 alerting, 2 halted",
            ["scope"],
            registry=self.registry,
        )
        self.budget_alerts = Gauge(
            "stateowner_budget_alerts",
            "BudgetAlerted events per scope",
            ["scope"],
            registry=self.registry,
        )
        self.budget_halts = Gauge(
            "stateowner_budget_halts",
            "BreakerOpened events per scope",
            ["scope"],
            registry=self.registry,
        )
        self.projection_stopped = Gauge(
            "stateowner_projection_stopped",
            "1 while a view is stopped at an event it cannot apply (a dead letter)",
            ["view"],
            registry=self.registry,
        )
        self.claims_waiting = Gauge(
            "stateowner_claims_waiting",
            "Long-poll claims waiting in this process",
            registry=self.registry,
        )
        self.log_head = Gauge(
            "stateowner_log_head", "Position of the newest event", registry=self.registry
        )
        self.streams_open = Gauge(
            "stateowner_streams_open",
            "Open /v1/stream connections in this process",
            registry=self.registry,
        )
        self.spans_exported = Counter(
            "stateowner_spans_exported_total",
            "Spans of finished runs the OTLP collector accepted",
            registry=self.registry,
        )
