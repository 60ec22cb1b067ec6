"""Shape aggregates, rows and events into the v1 bodies."""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder

from domain.item import Item, LeaseEnded, LeaseReported

EVENT_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}
NEVER_SHOWN = {"token_hash", "request_digest", "fingerprint"}


# What an item_status row and the Item aggregate both hold, under the same names.
ITEM_FIELDS = (
    "pipeline",
    "pipeline_version",
    "topic",
    "title",
    "stage",
    "status",
    "visit",
    "attempt",
    "agent",
    "lease_expires_at",
    "not_before",
    "visits",
    "transitions",
    "version",
    "created_by",
)


def item_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["item_id"]),
        **{name: row[name] for name in ITEM_FIELDS},
        **_spend(row),
        "position": row["position"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def item_from_aggregate(item: Item, position: int) -> dict[str, Any]:
    """The item as it stands in memory, in the shape its item_status row gives."""
    return item_from_row(
        {
            **{name: getattr(item, name) for name in ITEM_FIELDS},
            "item_id": item.id,
            "visits": dict(item.visits),
            "cost_usd": item.cost_usd,
            "tokens_in": item.tokens_in,
            "tokens_out": item.tokens_out,
            "position": position,
            "created_at": item.created_on,
            "updated_at": item.modified_on,
        }
    )


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


def _spend(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "cost_usd": float(row["cost_usd"]),
        "tokens": {"in": row["tokens_in"], "out": row["tokens_out"]},
    }


TOPIC_FIELDS = ("name", "defined", "owner", "priority", "tags", "metadata", "items")
TOPIC_TIMES = ("last_activity_at", "created_at", "updated_at")
AGENT_FIELDS = (
    "name",
    "role",
    "stages",
    "disabled",
    "claims",
    "completions",
    "failures",
    "expired",
)


def topic_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{name: row[name] for name in TOPIC_FIELDS},
        **_spend(row),
        **{name: row[name] for name in TOPIC_TIMES},
    }


def agent_row_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["agent_id"]),
        **{name: row[name] for name in AGENT_FIELDS},
        **_spend(row),
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
