"""Shape aggregates, rows and events into the v1 bodies."""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder

from domain.item import Item, LeaseEnded, LeaseReported

EVENT_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}
NEVER_SHOWN = {"token_hash", "request_digest", "fingerprint"}


def item_from_aggregate(item: Item, position: int) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "pipeline": item.pipeline,
        "pipeline_version": item.pipeline_version,
        "topic": item.topic,
        "title": item.title,
        "stage": item.stage,
        "status": item.status,
        "visit": item.visit,
        "attempt": item.attempt,
        "agent": item.agent,
        "lease_expires_at": item.lease_expires_at,
        "not_before": item.not_before,
        "visits": dict(item.visits),
        "transitions": item.transitions,
        "cost_usd": float(item.cost_usd),
        "tokens": {"in": item.tokens_in, "out": item.tokens_out},
        "version": item.version,
        "position": position,
        "created_by": item.created_by,
        "created_at": item.created_on,
        "updated_at": item.modified_on,
    }


def item_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["item_id"]),
        "pipeline": row["pipeline"],
        "pipeline_version": row["pipeline_version"],
        "topic": row["topic"],
        "title": row["title"],
        "stage": row["stage"],
        "status": row["status"],
        "visit": row["visit"],
        "attempt": row["attempt"],
        "agent": row["agent"],
        "lease_expires_at": row["lease_expires_at"],
        "not_before": row["not_before"],
        "visits": row["visits"],
        "transitions": row["transitions"],
        "cost_usd": float(row["cost_usd"]),
        "tokens": {"in": row["tokens_in"], "out": row["tokens_out"]},
        "version": row["version"],
        "position": row["position"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def event_body(domain_event: Any, position: int) -> dict[str, Any]:
    attributes = vars(domain_event)
    data = {
        key: value
        for key, value in attributes.items()
        if key not in EVENT_ENVELOPE | NEVER_SHOWN | {"actor", "caused_by"}
    }
    return {
        "position": position,
        "version": domain_event.originator_version,
        "item_id": str(domain_event.originator_id)
        if isinstance(domain_event, Item.Event)
        else None,
        "aggregate_id": str(domain_event.originator_id),
        "aggregate": type(domain_event).__qualname__.split(".")[0],
        "type": type(domain_event).__name__,
        "at": domain_event.timestamp,
        "actor": attributes.get("actor"),
        "caused_by": attributes.get("caused_by"),
        "data": jsonable_encoder(data),
    }


def topic_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "defined": row["defined"],
        "owner": row["owner"],
        "priority": row["priority"],
        "tags": row["tags"],
        "metadata": row["metadata"],
        "items": row["items"],
        "cost_usd": float(row["cost_usd"]),
        "tokens": {"in": row["tokens_in"], "out": row["tokens_out"]},
        "last_activity_at": row["last_activity_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def agent_row_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["agent_id"]),
        "name": row["name"],
        "role": row["role"],
        "stages": row["stages"],
        "disabled": row["disabled"],
        "claims": row["claims"],
        "completions": row["completions"],
        "failures": row["failures"],
        "expired": row["expired"],
        "cost_usd": float(row["cost_usd"]),
        "tokens": {"in": row["tokens_in"], "out": row["tokens_out"]},
        "last_active_at": row["last_active_at"],
        "created_at": row["created_at"],
    }


RUN_RESULTS = {
    Item.StageCompleted: "completed",
    Item.StageFailed: "failed",
    Item.LeaseExpired: "expired",
}


def runs_of(history: list[tuple[Any, int]]) -> list[dict[str, Any]]:
    """Every attempt at a stage, from its claim to how its lease ended."""
    runs: dict[str, dict[str, Any]] = {}
    for event, _ in history:
        if isinstance(event, Item.StageClaimed):
            runs[event.lease_id] = {
                "lease_id": event.lease_id,
                "agent": event.agent,
                "stage": event.stage,
                "attempt": event.attempt,
                "claimed_at": event.timestamp,
                "finished_at": None,
                "result": "running",
                "outcome": None,
                "error": None,
                "cost_usd": 0.0,
                "tokens": {"in": 0, "out": 0},
                "duration_ms": None,
                "trace": None,
            }
        elif isinstance(event, LeaseEnded) and event.lease_id in runs:
            run = runs[event.lease_id]
            run["finished_at"] = event.timestamp
            run["result"] = RUN_RESULTS[type(event)]
            if isinstance(event, LeaseReported):
                run.update(
                    outcome=getattr(event, "outcome", None),
                    error=getattr(event, "error", None),
                    cost_usd=float(event.cost_usd),
                    tokens={"in": event.tokens_in, "out": event.tokens_out},
                    duration_ms=event.duration_ms,
                    trace=jsonable_encoder(event.trace),
                )
    return list(runs.values())
