"""Incident webhooks: configure them, see their deliveries, re-drive a dead one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, WithJsonSchema

from api.deps import ContainerDep, Operator, parse_uuid
from api.errors import Problem, not_found
from api.openapi import problems
from api.schemas import Body, Name
from domain import application as _application  # noqa: F401 - every aggregate's events known
from projections.webhooks import (
    DEAD,
    DELIVERED,
    PENDING,
    NotRedrivable,
    UnknownDelivery,
    Webhook,
    event_types,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EVENT_TYPES = sorted(event_types())
URL_PATTERN = r"^https?://[A-Za-z0-9._~-]+(:[0-9]{1,5})?([/?#][\x21-\x7e]*)?$"


def _known_type(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(f"unknown event type {value!r}; known: {', '.join(EVENT_TYPES)}")
    return value


EventType = Annotated[
    str, AfterValidator(_known_type), WithJsonSchema({"type": "string", "enum": EVENT_TYPES})
]
Url = Annotated[
    str,
    StringConstraints(max_length=2000, pattern=URL_PATTERN),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 2000,
            "pattern": URL_PATTERN,
            "description": "an http:// or https:// URL the deliveries are posted to",
        }
    ),
]
StatusFilter = Annotated[str | None, Query(pattern=f"^({PENDING}|{DELIVERED}|{DEAD})$")]


class WebhookPut(Body):
    url: Url
    events: list[EventType] = Field(min_length=1, max_length=100)
    secret: Annotated[
        str, StringConstraints(min_length=8, max_length=500, pattern=r"^[\x21-\x7e]+$")
    ] = Field(description="signs each delivery (HMAC-SHA256); never shown again")


class DeliveryCounts(BaseModel):
    pending: int
    delivered: int
    dead: int


class WebhookOut(BaseModel):
    name: str
    url: str
    events: list[str]
    created_at: datetime
    updated_at: datetime
    updated_by: str
    deliveries: DeliveryCounts


class DeliveryOut(BaseModel):
    id: str
    event_type: str
    position: int | None
    item_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


def _webhook_body(container: ContainerDep, hook: Webhook) -> dict[str, Any]:
    return {
        "name": hook.name,
        "url": hook.url,
        "events": hook.events,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
        "updated_by": hook.updated_by,
        "deliveries": container.webhooks.counts(hook.name),
    }


def delivery_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "event_type": row["event_type"],
        "position": row["position"],
        "item_id": str(row["item_id"]) if row["item_id"] else None,
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": row["next_attempt_at"] if row["status"] == PENDING else None,
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "delivered_at": row["delivered_at"],
        "payload": json.loads(row["body"]),
    }


def _existing(container: ContainerDep, name: str) -> Webhook:
    hook = container.webhooks.get(name)
    if hook is None:
        raise not_found(f"no webhook named {name!r}")
    return hook


@router.put("/{name}", response_model=WebhookOut, responses=problems(body=True))
def put_webhook(
    name: Name, body: WebhookPut, principal: Operator, container: ContainerDep
) -> dict[str, Any]:
    """Create or change a webhook: the event types it receives, where, and the secret that
    signs them. A new webhook receives the events appended after it was put."""
    hook = container.webhooks.put(name, body.url, body.events, body.secret, principal.actor)
    return _webhook_body(container, hook)


@router.get("", response_model=list[WebhookOut], responses=problems())
def list_webhooks(principal: Operator, container: ContainerDep) -> list[dict[str, Any]]:
    """Every webhook with its deliveries counted by status; never a secret."""
    return [_webhook_body(container, hook) for hook in container.webhooks.all()]


@router.get("/{name}", response_model=WebhookOut, responses=problems(404))
def get_webhook(name: Name, principal: Operator, container: ContainerDep) -> dict[str, Any]:
    return _webhook_body(container, _existing(container, name))


@router.delete("/{name}", status_code=204, responses=problems(404))
def delete_webhook(name: Name, principal: Operator, container: ContainerDep) -> Response:
    """Remove the webhook and its deliveries, sent or not."""
    if not container.webhooks.delete(name):
        raise not_found(f"no webhook named {name!r}")
    return Response(status_code=204)


@router.get("/{name}/deliveries", response_model=DeliveriesOut, responses=problems(404))
def list_deliveries(
    name: Name,
    principal: Operator,
    container: ContainerDep,
    status: StatusFilter = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> dict[str, Any]:
    """The webhook's deliveries, newest first: each one's state, attempts, last answer or
    error, and the payload it sends."""
    _existing(container, name)
    rows, next_cursor = container.webhooks.deliveries_page(
        name, status, int(cursor) if cursor else None, limit
    )
    return {
        "deliveries": [delivery_body(row) for row in rows],
        "next_cursor": str(next_cursor) if next_cursor is not None else None,
    }


@router.post(
    "/{name}/deliveries/{delivery_id}/redrive",
    response_model=DeliveryOut,
    responses=problems(404, 409),
)
def redrive_delivery(
    name: Name, delivery_id: str, principal: Operator, container: ContainerDep
) -> dict[str, Any]:
    """Send a dead (or delivered) delivery again, from its first attempt, now."""
    identity = parse_uuid(delivery_id, "delivery")
    try:
        row = container.webhooks.redrive(name, identity)
    except UnknownDelivery as error:
        raise not_found(str(error)) from None
    except NotRedrivable as error:
        raise Problem(409, "invalid_state", "Not allowed in this state", str(error)) from None
    if container.sender is not None:
        container.sender.wake()
    return delivery_body(row)
