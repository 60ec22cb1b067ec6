"""The console's incident pages: webhooks and their deliveries (re-drive a dead one), and the
item page's rewind and fork. Operators only, checked in every handler."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from api.console.routes import _by, _item_context, _item_id
from api.console.web import (
    ConsoleContainer,
    QueryReader,
    UserDep,
    checked_form,
    page,
    require_role,
    see_other,
)
from api.deps import request_context
from api.routes.webhooks import delivery_body
from domain.agent import Role
from domain.errors import DomainError, NotFound
from projections.webhooks import DEAD, DELIVERED, PENDING, NotRedrivable, UnknownDelivery

router = APIRouter(include_in_schema=False)

DELIVERIES_PAGE = 50
STATUSES = (PENDING, DELIVERED, DEAD)


@router.get("/webhooks")
def webhooks(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    require_role(user, Role.OPERATOR)
    hooks = [
        {"hook": hook, "counts": container.webhooks.counts(hook.name)}
        for hook in container.webhooks.all()
    ]
    return page(request, "webhooks.html", user, hooks=hooks)


@router.get("/webhooks/{name}")
def webhook_page(
    name: str, request: Request, user: UserDep, container: ConsoleContainer
) -> HTMLResponse:
    require_role(user, Role.OPERATOR)
    hook = container.webhooks.get(name)
    if hook is None:
        raise HTTPException(404, f"no webhook named {name!r}")
    query = QueryReader(request.query_params)
    status = query.text("status", 20)
    if status is not None and status not in STATUSES:
        query.problems.append(f"status must be one of {', '.join(STATUSES)}; ignored")
        status = None
    cursor = query.number("cursor")
    rows, next_cursor = container.webhooks.deliveries_page(name, status, cursor, DELIVERIES_PAGE)
    notice = (
        "Re-driven: the delivery is tried again now."
        if request.query_params.get("done") == "redriven"
        else None
    )
    return page(
        request,
        "webhook.html",
        user,
        hook=hook,
        counts=container.webhooks.counts(name),
        deliveries=[delivery_body(row) for row in rows],
        status_filter=status,
        statuses=STATUSES,
        next_cursor=next_cursor,
        problems=query.problems,
        notice=notice,
    )


@router.post("/webhooks/{name}/deliveries/{delivery_id}/redrive")
async def redrive(
    name: str, delivery_id: str, request: Request, user: UserDep, container: ConsoleContainer
) -> Response:
    await checked_form(request, user)
    require_role(user, Role.OPERATOR)
    try:
        identity = uuid.UUID(delivery_id)
        await run_in_threadpool(container.webhooks.redrive, name, identity)
    except (ValueError, UnknownDelivery):
        raise HTTPException(404, f"webhook {name!r} has no delivery {delivery_id}") from None
    except NotRedrivable as error:
        raise HTTPException(409, str(error)) from None
    if container.sender is not None:
        container.sender.wake()
    return see_other(f"/webhooks/{name}?done=redriven")


def _refused(
    request: Request, user: UserDep, container: ConsoleContainer, uid: uuid.UUID, why: str
) -> HTMLResponse:
    """The item's page again, saying why nothing was done."""
    context = _item_context(container, uid, 0)
    return page(
        request, "item.html", user, status_code=409, problems=[f"Refused: {why}"], **context
    )


@router.post("/items/{item_id}/rewind")
async def rewind(
    item_id: str, request: Request, user: UserDep, container: ConsoleContainer
) -> Response:
    uid = _item_id(item_id)
    fields = await checked_form(request, user)
    require_role(user, Role.OPERATOR)
    request_context(request)["item_id"] = str(uid)
    stage, reason = fields.get("stage", "").strip(), fields.get("reason", "").strip()[:500]
    if not stage or not reason:
        why = "a rewind needs a stage and a reason"
        return await run_in_threadpool(_refused, request, user, container, uid, why)
    try:
        await run_in_threadpool(container.app.rewind_item, uid, stage, reason, _by(request, user))
    except NotFound:
        raise HTTPException(404, f"no item {item_id}") from None
    except DomainError as error:
        return await run_in_threadpool(_refused, request, user, container, uid, str(error))
    return see_other(f"/items/{uid}?done=rewound")


@router.post("/items/{item_id}/fork")
async def fork(
    item_id: str, request: Request, user: UserDep, container: ConsoleContainer
) -> Response:
    uid = _item_id(item_id)
    fields = await checked_form(request, user)
    require_role(user, Role.OPERATOR)
    stage, version = fields.get("stage", "").strip(), fields.get("pipeline_version", "").strip()
    if not stage or (version and not (version.isdigit() and len(version) < 10)):
        why = "a fork needs a stage, and a version is a whole number"
        return await run_in_threadpool(_refused, request, user, container, uid, why)
    try:
        item, _ = await run_in_threadpool(
            lambda: container.app.fork_item(
                uid, stage, _by(request, user), pipeline_version=int(version) if version else None
            )
        )
    except NotFound as error:
        if "pipeline_version" in str(error):
            return await run_in_threadpool(_refused, request, user, container, uid, str(error))
        raise HTTPException(404, f"no item {item_id}") from None
    except DomainError as error:
        return await run_in_threadpool(_refused, request, user, container, uid, str(error))
    return see_other(f"/items/{item.id}?done=forked")
