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
    "eval",
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
    Item.LeaseRevoked: "revoked",
}


def _run(claimed: Any) -> dict[str, Any]:
    return {
        "lease_id": claimed.lease_id,
        "agent": claimed.agent,
        "stage": claimed.stage,
        "attempt": claimed.attempt,
        "claimed_at": claimed.timestamp,
        "finished_at": None,
        "result": "running",
        "outcome": None,
        "error": None,
        "cost_usd": 0.0,
        "tokens": {"in": 0, "out": 0},
        "duration_ms": None,
        "trace": None,
        "model": None,
    }


def _finish(run: dict[str, Any], ended: LeaseEnded) -> None:
    run["finished_at"] = ended.timestamp
    run["result"] = RUN_RESULTS[type(ended)]
    if isinstance(ended, LeaseReported):
        run.update(
            outcome=getattr(ended, "outcome", None),
            error=getattr(ended, "error", None),
            cost_usd=float(ended.cost_usd),
            tokens={"in": ended.tokens_in, "out": ended.tokens_out},
            duration_ms=ended.duration_ms,
            trace=jsonable_encoder(ended.trace),
            model=ended.model,
        )


def runs_page(history: list[tuple[Any, int]], limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """Up to `limit` runs (a claim, and how its lease ended) from a stretch of an item's history;
    with the version of the last event they took in, and whether another run follows."""
    runs: dict[str, dict[str, Any]] = {}
    last_version = 0
    for event, _ in history:
        if isinstance(event, Item.StageClaimed):
            if len(runs) == limit:
                return list(runs.values()), last_version, True
            runs[event.lease_id] = _run(event)
        elif isinstance(event, LeaseEnded) and event.lease_id in runs:
            _finish(runs[event.lease_id], event)
        last_version = event.originator_version
    return list(runs.values()), last_version, False


def runs_of(history: list[tuple[Any, int]]) -> list[dict[str, Any]]:
    """Every run in a stretch of an item's history."""
    return runs_page(history, len(history) + 1)[0]
