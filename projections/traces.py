"""Traces out: a tracked follower that exports each finished run as OpenTelemetry spans.

One trace per item (its id is the item's), one span per run (claim to the lease's end), the
run's tool calls as child spans. The position moves only after the collector accepted a batch,
so a collector that cannot be reached delays the export and loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.persistence import Tracking
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from psycopg import Cursor, sql
from psycopg.rows import DictRow

from domain.item import Item, LeaseEnded, LeaseReported
from projections.base import LOG_NAME, PositionMoved, View

TRACES_PATH = "/v1/traces"
SCOPE = InstrumentationScope("stateowner", "1")
MAX_ATTRIBUTE_CHARS = 4096
MAX_TRACE_ATTRIBUTES = 32
RESULTS: dict[type, str] = {
    Item.StageCompleted: "completed",
    Item.StageFailed: "failed",
    Item.LeaseExpired: "expired",
    Item.LeaseRevoked: "revoked",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ExportFailed(Exception):
    """The collector did not accept a batch: the follower retries it, from the same position."""


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector's base URL (the path is added unless given)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def trace_id_of(item_id: uuid.UUID) -> int:
    """An item's trace id is its own 128 bits, so a trace can be found from the item, and back."""
    return item_id.int


def span_id_of(*parts: object) -> int:
    """A span id derived from what the span is, so exporting a run again repeats the same span
    (a duplicate a backend can recognise) rather than adding another."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def nanos(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True)
class OpenRun:
    """A claimed lease whose end has not been seen yet: what its span needs from the claim."""

    lease_id: str
    item_id: uuid.UUID
    stage: str
    agent: str
    attempt: int
    claimed_at: datetime

    @classmethod
    def of(cls, claimed: Any) -> OpenRun:
        return cls(
            claimed.lease_id,
            claimed.originator_id,
            claimed.stage,
            claimed.agent,
            claimed.attempt,
            claimed.timestamp,
        )


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text[:MAX_ATTRIBUTE_CHARS]


def _model(ended: LeaseReported) -> str | None:
    if ended.model:
        return ended.model
    trace = ended.trace
    model = trace.get("model") if isinstance(trace, dict) else None
    return model if isinstance(model, str) and model else None


def run_attributes(run: OpenRun, ended: LeaseEnded) -> dict[str, Any]:
    """The run's span attributes: stateowner's own, and GenAI semantic conventions."""
    result = RESULTS.get(type(ended), "ended")
    attributes: dict[str, Any] = {
        "stateowner.item_id": str(run.item_id),
        "stateowner.stage": run.stage,
        "stateowner.attempt": run.attempt,
        "stateowner.agent": run.agent,
        "stateowner.lease_id": run.lease_id,
        "stateowner.result": result,
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": run.agent,
    }
    if isinstance(ended, Item.StageCompleted) and ended.outcome:
        attributes["stateowner.outcome"] = ended.outcome
    if isinstance(ended, Item.StageFailed):
        attributes["stateowner.error"] = _text(ended.error)
        attributes["stateowner.retryable"] = ended.retryable
        attributes["error.type"] = "stage_failed"
    if isinstance(ended, Item.LeaseRevoked):
        attributes["stateowner.error"] = _text(ended.reason)
    if isinstance(ended, LeaseReported):
        model = _model(ended)
        if model:
            attributes["gen_ai.request.model"] = model
            attributes["gen_ai.response.model"] = model
        attributes["gen_ai.usage.input_tokens"] = ended.tokens_in
        attributes["gen_ai.usage.output_tokens"] = ended.tokens_out
        attributes["stateowner.cost_usd"] = float(ended.cost_usd)
        attributes["stateowner.duration_ms"] = ended.duration_ms
        if isinstance(ended.trace, dict):
            scalars = [
                (key, value)
                for key, value in ended.trace.items()
                if isinstance(key, str) and isinstance(value, str | int | float | bool)
            ]
            for key, value in scalars[:MAX_TRACE_ATTRIBUTES]:
                attributes[f"stateowner.trace.{key}"] = (
                    _text(value) if isinstance(value, str) else value
                )
    return attributes


def _status(ended: LeaseEnded) -> Status:
    if isinstance(ended, Item.StageCompleted):
        return Status(StatusCode.OK)
    if isinstance(ended, Item.StageFailed):
        return Status(StatusCode.ERROR, _text(ended.error))
    return Status(StatusCode.ERROR, f"lease {RESULTS.get(type(ended), 'ended')}")


def _started(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return fallback


def _tool_calls(trace: Any) -> list[dict[str, Any]]:
    calls = trace.get("tool_calls") if isinstance(trace, dict) else None
    if not isinstance(calls, list):
        return []
    return [call for call in calls if isinstance(call, dict)]


def tool_spans(
    run: OpenRun, ended: LeaseReported, parent: SpanContext, resource: Resource
) -> list[ReadableSpan]:
    """Each tool call the run's trace records (as the SDK's `job.trace.tool` writes them)."""
    spans = []
    for index, call in enumerate(_tool_calls(ended.trace)):
        name = call.get("name") if isinstance(call.get("name"), str) else "tool"
        start = _started(call.get("started_at"), run.claimed_at)
        duration = call.get("duration_ms")
        length = float(duration) if isinstance(duration, int | float) and duration >= 0 else 0.0
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "stateowner.item_id": str(run.item_id),
            "stateowner.lease_id": run.lease_id,
        }
        for key, attribute in (
            ("input", "gen_ai.tool.call.arguments"),
            ("output", "gen_ai.tool.call.result"),
        ):
            if call.get(key) is not None:
                attributes[attribute] = _text(call[key])
        error = call.get("error")
        if error:
            attributes["error.type"] = "tool_error"
        context = SpanContext(
            parent.trace_id,
            span_id_of("tool", run.lease_id, index),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        spans.append(
            ReadableSpan(
                name=f"execute_tool {name}",
                context=context,
                parent=parent,
                resource=resource,
                attributes=attributes,
                kind=SpanKind.INTERNAL,
                status=Status(StatusCode.ERROR, _text(error)) if error else Status(StatusCode.OK),
                start_time=nanos(start),
                end_time=nanos(start) + round(length * 1_000_000),
                instrumentation_scope=SCOPE,
            )
        )
    return spans


def run_spans(run: OpenRun, ended: LeaseEnded, resource: Resource) -> list[ReadableSpan]:
    """The run's span (claim to the lease's end) and its tool calls' spans under it."""
    context = SpanContext(
        trace_id_of(run.item_id),
        span_id_of("run", run.lease_id),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    span = ReadableSpan(
        name=f"invoke_agent {run.stage}",
        context=context,
        parent=None,
        resource=resource,
        attributes=run_attributes(run, ended),
        kind=SpanKind.INTERNAL,
        status=_status(ended),
        start_time=nanos(run.claimed_at),
        end_time=nanos(ended.timestamp),
        instrumentation_scope=SCOPE,
    )
    children = tool_spans(run, ended, context, resource) if isinstance(ended, LeaseReported) else []
    return [span, *children]


def unclaimed_run(ended: LeaseEnded) -> OpenRun:
    """A run whose claim this follower never saw (its table was dropped): it began, as far as
    anyone can tell, `duration_ms` before it ended."""
    took = ended.duration_ms if isinstance(ended, LeaseReported) else 0
    return OpenRun(
        ended.lease_id,
        ended.originator_id,
        ended.stage,
        ended.agent,
        0,
        ended.timestamp - timedelta(milliseconds=took),
    )


class TraceExport(View):
    """Exports every finished run to an OTLP collector, once, in log order.

    Runs still open are kept in `traces_open_runs`, written in the same transaction as the
    position, so a run's claim and its end may fall in different batches, or either side of a
    restart."""

    name = "traces"
    tables = {"traces_open_runs": ("lease_id",)}

    def __init__(
        self,
        datastore: Any,
        exporter: SpanExporter,
        resource: Resource | None = None,
        on_exported: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(datastore)
        self.exporter = exporter
        self.resource = resource or Resource.create({SERVICE_NAME: "stateowner"})
        self.on_exported = on_exported

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (lease_id text PRIMARY KEY, item_id uuid NOT NULL, "
                "stage text NOT NULL, agent text NOT NULL, attempt int NOT NULL, "
                "claimed_at timestamptz NOT NULL)"
            ).format(self.table("traces_open_runs"))
        ]

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        """Export the runs this batch ends, then record the runs it leaves open and the position
        together; a failed export records nothing, so the batch is read and exported again."""
        if not batch:
            return
        opened: dict[str, OpenRun] = {}
        ended: list[LeaseEnded] = []
        for event, _ in batch:
            if isinstance(event, Item.StageClaimed):
                opened[event.lease_id] = OpenRun.of(event)
            elif isinstance(event, LeaseEnded):
                ended.append(event)
        stored = self._open_runs([e.lease_id for e in ended if e.lease_id not in opened])
        spans: list[ReadableSpan] = []
        for end in ended:
            run = opened.pop(end.lease_id, None) or stored.get(end.lease_id) or unclaimed_run(end)
            spans.extend(run_spans(run, end, self.resource))
        if spans:
            self._export(spans)
        with self.datastore.transaction(commit=True) as curs:
            if self._locked_position(curs) != after:
                raise PositionMoved(self.name)
            self._keep(curs, opened.values())
            self._forget(curs, [end.lease_id for end in ended])
            self._insert_tracking(curs, Tracking(LOG_NAME, batch[-1][1]))

    def _export(self, spans: list[ReadableSpan]) -> None:
        result = self.exporter.export(spans)
        if result is not SpanExportResult.SUCCESS:
            raise ExportFailed(
                f"the collector did not accept {len(spans)} spans; they are exported again"
            )
        if self.on_exported is not None:
            self.on_exported(len(spans))

    def _open_runs(self, lease_ids: list[str]) -> dict[str, OpenRun]:
        if not lease_ids:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                sql.SQL(
                    "SELECT lease_id, item_id, stage, agent, attempt, claimed_at FROM {} "
                    "WHERE lease_id = ANY(%s)"
                ).format(self.table("traces_open_runs")),
                (lease_ids,),
            )
            return {row["lease_id"]: OpenRun(**row) for row in curs.fetchall()}

    def _keep(self, curs: Cursor[DictRow], runs: Iterable[OpenRun]) -> None:
        rows = [(r.lease_id, r.item_id, r.stage, r.agent, r.attempt, r.claimed_at) for r in runs]
        if rows:
            curs.executemany(
                sql.SQL(
                    "INSERT INTO {} (lease_id, item_id, stage, agent, attempt, claimed_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (lease_id) DO NOTHING"
                ).format(self.table("traces_open_runs")),
                rows,
            )

    def _forget(self, curs: Cursor[DictRow], lease_ids: list[str]) -> None:
        if lease_ids:
            curs.execute(
                sql.SQL("DELETE FROM {} WHERE lease_id = ANY(%s)").format(
                    self.table("traces_open_runs")
                ),
                (lease_ids,),
            )

    def close(self) -> None:
        """Stop the exporter: a retry it is waiting out ends now."""
        self.exporter.shutdown()
