"""The console's pages. Reads go through `Queries` and the application; commands through the same
application methods as the API, with the signed-in principal as the actor."""

from __future__ import annotations

import difflib
import hmac
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import authenticate
from api.console.session import SESSION_COOKIE, SIGNIN_COOKIE
from api.console.web import (
    ConsoleContainer,
    QueryReader,
    User,
    UserDep,
    checked_form,
    form_fields,
    page,
    require_role,
    see_other,
    sessions_of,
)
from api.container import Container
from api.deps import request_context, wait_for_view
from api.errors import Problem
from api.evals import activate, run_body
from api.presenters import event_body, item_from_aggregate, runs_of
from api.routes.agents import rotate_token_for
from api.routes.log import projection_statuses
from domain.agent import Role
from domain.budget import Budget, parse_scope
from domain.errors import DomainError, NotFound
from domain.guards import window_of
from domain.item import Item, Status
from domain.pipeline import Pipeline
from domain.values import By, Limits

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
TIMELINE_PAGE = 200
STUCK_ROWS = 8
LEASE_WARNING = timedelta(seconds=60)
STATUSES = ("ready", "claimed", "advancing", "parked", "halted", "done", "cancelled")
INCIDENTS = {"ItemParked": "parked", "ItemHalted": "halted", "BreakerOpened": "breaker opened"}
EVAL_RUNS = 10
ITEM_COMMANDS: dict[str, tuple[Callable[..., Any], str]] = {
    "retry": (lambda app: app.retry_item, "retried"),
    "cancel": (lambda app: app.cancel_item, "cancelled"),
    "resume": (lambda app: app.resume_item, "resumed"),
}
NOTICES = {
    "retried": "Retried: the stage is ready again, attempts reset.",
    "cancelled": "Cancelled.",
    "resumed": "Resumed: the item carries on where the halt stopped it.",
    "budget_saved": "Budget saved.",
    "breaker_reset": "Breaker reset for the rest of today.",
    "disabled": "Agent disabled: its token is refused from now on.",
    "rewound": "Rewound: the stage is ready again.",
    "forked": "Forked: this is the new item, ready at its stage.",
}


def caught_up(request: Request, container: Container, view: str) -> list[str]:
    """Read-your-writes after a command: wait (bounded) until the view has applied the position
    the command reached (`at=`); say so on the page if it has not yet."""
    query = QueryReader(request.query_params)
    position = query.number("at")
    if position is None:
        return query.problems
    try:
        wait_for_view(container, view, position)
    except Problem as problem:
        return [*query.problems, f"This page may not show the change yet: {problem.detail}"]
    return query.problems


def _by(request: Request, user: User) -> By:
    context = request.scope.get("state", {}).get("context", {})
    return By(user.principal.actor, str(context.get("request_id") or uuid.uuid4().hex))


def _safe_next(value: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    # Browsers read "/\\host" as "//host": refuse backslashes too.
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


# -- sign-in and sign-out ----------------------------------------------------------------------


def _signin_page(
    request: Request, next_path: str, message: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = sessions_of(request).signin_token()
    response = page(
        request,
        "signin.html",
        None,
        status_code=status_code,
        next_path=next_path,
        signin_token=token,
        message=message,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=600,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/signin")
def signin_form(request: Request) -> HTMLResponse:
    return _signin_page(request, _safe_next(request.query_params.get("next")))


@router.post("/signin")
async def signin(request: Request, container: ConsoleContainer) -> Response:
    """A token in, a session cookie out; the token itself is kept nowhere."""
    fields = await form_fields(request)
    next_path = _safe_next(fields.get("next"))
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(
        fields.get("signin_token", "").encode(), expected.encode()
    ):
        return _signin_page(
            request, next_path, "The sign-in form expired; please try again.", status_code=403
        )
    token = fields.get("token", "").strip()
    admin_token = container.settings.admin_token
    sessions = sessions_of(request)
    try:
        principal = await run_in_threadpool(
            authenticate,
            f"Bearer {token}",
            container.app,
            admin_token.get_secret_value() if admin_token else None,
        )
    except Problem:
        return _signin_page(request, next_path, "That token is not valid.", status_code=401)
    if not principal.has(Role.AUDITOR):
        return _signin_page(
            request,
            next_path,
            "The console is for admins, operators and auditors; agents use the API.",
            status_code=403,
        )
    fingerprint = await run_in_threadpool(sessions.fingerprint, principal, container.app)
    cookie = sessions.issue(principal, fingerprint, container.clock())
    request_context(request)["principal"] = principal.actor
    response = see_other(next_path)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=sessions.minutes * 60,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout")
async def signout(request: Request, user: UserDep) -> Response:
    await checked_form(request, user)
    response = see_other("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- overview ------------------------------------------------------------------------------------


def _stage_order(container: Container, pipeline: str) -> list[str]:
    try:
        return container.app.pipeline(pipeline).parsed.stage_names
    except (NotFound, DomainError):
        return []


def _matrix(container: Container, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items by pipeline, stage and status, stages in their pipeline's order."""
    cells: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        cells[row["pipeline"]][row["stage"]][row["status"]] = row["n"]
    matrix = []
    for pipeline in sorted(cells):
        order = _stage_order(container, pipeline)
        stages = sorted(
            cells[pipeline], key=lambda s: (s not in order, order.index(s) if s in order else 0, s)
        )
        matrix.append(
            {
                "pipeline": pipeline,
                "stages": [
                    {
                        "stage": stage,
                        "counts": cells[pipeline][stage],
                        "total": sum(cells[pipeline][stage].values()),
                    }
                    for stage in stages
                ],
                "total": sum(sum(c.values()) for c in cells[pipeline].values()),
            }
        )
    return matrix


def _incidents(container: Container, budgets: list[Any]) -> list[dict[str, Any]]:
    scopes = {Budget.create_id(b.scope): b.scope for b in budgets}
    return [
        {**row, "label": INCIDENTS[row["type"]], "scope": scopes.get(row["aggregate_id"])}
        for row in container.queries.latest_of_types(list(INCIDENTS), 12)
    ]


def _overview(container: Container, user: User) -> dict[str, Any]:
    queries = container.queries
    now = container.clock()
    budgets = queries.budgets(window_of(now))
    return {
        "matrix": _matrix(container, queries.item_counts()),
        "statuses": STATUSES,
        "parked": queries.items_in(Status.PARKED, STUCK_ROWS),
        "halted": queries.items_in(Status.HALTED, STUCK_ROWS),
        "expiring": queries.leases_ending(now + LEASE_WARNING, STUCK_ROWS),
        "waiting": queries.waiting_longest(now, STUCK_ROWS),
        "budgets": budgets,
        "projections": projection_statuses(container) if user.may_operate else None,
        "incidents": _incidents(container, budgets),
        "head": queries.log_head(),
    }


@router.get("/")
def overview(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    return page(request, "overview.html", user, **_overview(container, user))


# -- items ---------------------------------------------------------------------------------------


@router.get("/items")
def items(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    query = QueryReader(request.query_params)
    filters = {
        "pipeline": query.text("pipeline"),
        "topic": query.text("topic"),
        "stage": query.text("stage"),
        "status": query.choice("status", STATUSES),
        "agent": query.text("agent"),
    }
    cursor = query.text("cursor", 500)
    try:
        rows, next_cursor = container.queries.items(
            **filters, limit=PAGE_SIZE, cursor=cursor, newest_first=True
        )
    except ValueError:
        query.problems.append(
            "the page cursor is not one this console handed out; showing the first page"
        )
        cursor = None
        rows, next_cursor = container.queries.items(**filters, limit=PAGE_SIZE, newest_first=True)
    active = {k: v for k, v in filters.items() if v is not None}
    counts = container.queries.item_counts()
    return page(
        request,
        "items.html",
        user,
        rows=rows,
        filters=filters,
        active=active,
        problems=query.problems,
        next_url="/items?" + urlencode({**active, "cursor": next_cursor}) if next_cursor else None,
        first_url="/items?" + urlencode(active) if cursor else None,
        statuses=STATUSES,
        pipelines=sorted({row["pipeline"] for row in counts}),
        stages=sorted({row["stage"] for row in counts if row["stage"]}),
        head=container.queries.log_head(),
    )


def _item_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(404, f"no item {value!r}") from None


def _summary(event: Any) -> str:
    """One line saying what an event did, for the timeline."""
    name = type(event).__name__
    if isinstance(event, Item.ItemCreated):
        return f"created on {event.pipeline} v{event.pipeline_version}, topic {event.topic}"
    if isinstance(event, Item.StageReady):
        when = f", not before {event.not_before:%H:%M:%S}" if event.not_before else ""
        return f"{event.stage} ready (visit {event.visit}, attempt {event.attempt}, {event.reason}{when})"
    if isinstance(event, Item.StageClaimed):
        return f"{event.stage} claimed by {event.agent}, attempt {event.attempt}"
    if isinstance(event, Item.LeaseRenewed):
        return f"lease renewed until {event.expires_at:%H:%M:%S}"
    if isinstance(event, Item.StageCompleted):
        outcome = f" → {event.outcome}" if event.outcome else ""
        return f"{event.stage} completed by {event.agent}{outcome}"
    if isinstance(event, Item.StageFailed):
        kind = "retryable" if event.retryable else "not retryable"
        return f"{event.stage} failed ({kind}): {event.error}"
    if isinstance(event, Item.LeaseExpired):
        return f"{event.stage}: {event.agent}'s lease expired"
    if isinstance(event, Item.ItemParked):
        return f"parked at {event.stage}: {event.reason} — {event.detail}"
    if isinstance(event, Item.ItemHalted):
        return f"halted: {event.reason} — {event.detail}"
    return {"ItemResumed": "resumed", "ItemCompleted": "done", "ItemCancelled": "cancelled"}.get(
        name, name
    )


def _item_context(container: Container, item_id: uuid.UUID, after: int) -> dict[str, Any]:
    app = container.app
    history = [
        (app.mapper.to_domain_event(stored), position)
        for stored, position in container.queries.stored_events(item_id)
    ]
    if not history or not isinstance(history[0][0], Item.ItemCreated):
        raise HTTPException(404, f"no item {item_id}")
    item = app.item(item_id)
    shown = history[after : after + TIMELINE_PAGE]
    timeline = [
        {
            **event_body(event, position),
            "summary": _summary(event),
            "cost": getattr(event, "cost_usd", None),
        }
        for event, position in shown
    ]
    return {
        "item": item_from_aggregate(item, history[-1][1]),
        "final": item.is_final,
        "timeline": timeline,
        "runs": list(reversed(runs_of(history))),
        "total_events": len(history),
        "after": after,
        "page_size": TIMELINE_PAGE,
        "head": history[-1][1],
    }


@router.get("/items/{item_id}")
def item_page(
    item_id: str, request: Request, user: UserDep, container: ConsoleContainer
) -> HTMLResponse:
    uid = _item_id(item_id)
    request_context(request)["item_id"] = str(uid)
    query = QueryReader(request.query_params)
    after = query.number("after") or 0
    notice = NOTICES.get(request.query_params.get("done", ""))
    return page(
        request,
        "item.html",
        user,
        notice=notice,
        problems=query.problems,
        **_item_context(container, uid, after),
    )


@router.get("/items/{item_id}/at")
def item_at(
    item_id: str, request: Request, user: UserDep, container: ConsoleContainer
) -> HTMLResponse:
    """The item as it stood at a version: the slider's fragment."""
    uid = _item_id(item_id)
    query = QueryReader(request.query_params)
    current = container.app.item(uid)
    version = query.number("version", 1, current.version) or current.version
    item = container.app.item(uid, version=version)
    return page(
        request,
        "item_at.html",
        user,
        at=item_from_aggregate(item, container.queries.event_position(uid, version)),
        outputs=item.outputs,
        path_taken=item.path,
        latest=current.version,
        problems=query.problems,
    )


@router.post("/items/{item_id}/{command}")
async def item_command(
    item_id: str, command: str, request: Request, user: UserDep, container: ConsoleContainer
) -> Response:
    """Retry, cancel or resume: operators only, checked here whatever the page showed."""
    if command not in ITEM_COMMANDS:
        raise HTTPException(404, f"no command {command!r}")
    uid = _item_id(item_id)
    await checked_form(request, user)
    require_role(user, Role.OPERATOR)
    request_context(request)["item_id"] = str(uid)
    get_method, done = ITEM_COMMANDS[command]
    try:
        await run_in_threadpool(get_method(container.app), uid, _by(request, user))
    except NotFound:
        raise HTTPException(404, f"no item {item_id}") from None
    except DomainError as error:
        context = await run_in_threadpool(_item_context, container, uid, 0)
        return page(
            request, "item.html", user, status_code=409, problems=[f"Refused: {error}"], **context
        )
    return see_other(f"/items/{uid}?done={done}")


# -- budgets -------------------------------------------------------------------------------------


@router.get("/budgets")
def budgets(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    return _budgets_page(request, user, container, caught_up(request, container, "budgets"))


def _budgets_page(
    request: Request,
    user: User,
    container: Container,
    problems: list[str] | None = None,
    status_code: int = 200,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    window = window_of(container.clock())
    return page(
        request,
        "budgets.html",
        user,
        status_code=status_code,
        budgets=container.queries.budgets(window),
        window=window,
        problems=problems or [],
        notice=NOTICES.get(request.query_params.get("done", "")),
        form=form or {},
        head=container.queries.log_head(),
    )


def _usd(value: str | None, name: str) -> Decimal:
    try:
        amount = Decimal((value or "").strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{name} must be an amount in dollars, not {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount > 10_000_000:
        raise ValueError(f"{name} must be between 0 and 10,000,000 dollars")
    return amount.quantize(Decimal("0.000001"))


@router.post("/budgets")
async def save_budget(request: Request, user: UserDep, container: ConsoleContainer) -> Response:
    fields = await checked_form(request, user)
    require_role(user, Role.OPERATOR)
    scope = fields.get("scope", "").strip()
    try:
        limits = Limits(
            _usd(fields.get("alert_usd"), "alert"), _usd(fields.get("halt_usd"), "halt")
        )
        parse_scope(scope)
        _, position = await run_in_threadpool(
            container.app.put_budget, scope, limits, _by(request, user)
        )
    except (ValueError, DomainError) as error:
        return await run_in_threadpool(
            _budgets_page, request, user, container, [f"Not saved: {error}"], 422, fields
        )
    return see_other(f"/budgets?done=budget_saved&at={position}")


@router.post("/budgets/reset")
async def reset_budget(request: Request, user: UserDep, container: ConsoleContainer) -> Response:
    fields = await checked_form(request, user)
    require_role(user, Role.OPERATOR)
    try:
        _, position = await run_in_threadpool(
            container.app.reset_breaker, fields.get("scope", ""), _by(request, user)
        )
    except DomainError as error:
        return await run_in_threadpool(
            _budgets_page, request, user, container, [f"Not reset: {error}"], 409
        )
    return see_other(f"/budgets?done=breaker_reset&at={position}")


# -- agents --------------------------------------------------------------------------------------


def _agents_page(
    request: Request,
    user: User,
    container: Container,
    problems: list[str] | None = None,
    new_token: tuple[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    rows = container.queries.agents()
    spent = container.queries.spent(
        window_of(container.clock()), [f"agent:{row['name']}" for row in rows]
    )
    return page(
        request,
        "agents.html",
        user,
        status_code=status_code,
        agents=[{**row, "spent_today": spent.get(f"agent:{row['name']}", 0)} for row in rows],
        problems=problems or [],
        notice=NOTICES.get(request.query_params.get("done", "")),
        new_token=new_token,
        head=container.queries.log_head(),
    )


@router.get("/agents")
def agents(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    require_role(user, Role.OPERATOR)
    return _agents_page(request, user, container, caught_up(request, container, "agents"))


@router.post("/agents/{name}/{command}")
async def agent_command(
    name: str, command: str, request: Request, user: UserDep, container: ConsoleContainer
) -> Response:
    """Disable or rotate: admins only. A rotated token is shown in this answer, once."""
    if command not in ("disable", "rotate"):
        raise HTTPException(404, f"no command {command!r}")
    await checked_form(request, user)
    require_role(user, Role.ADMIN)
    by = _by(request, user)
    try:
        if command == "disable":
            _, position = await run_in_threadpool(container.app.disable_agent, name, by)
            return see_other(f"/agents?done=disabled&at={position}")
        _, token, _ = await run_in_threadpool(rotate_token_for, container.app, name, by)
    except NotFound:
        raise HTTPException(404, f"no agent {name!r}") from None
    except DomainError as error:
        return await run_in_threadpool(
            _agents_page, request, user, container, [f"Refused: {error}"], None, 409
        )
    return await run_in_threadpool(_agents_page, request, user, container, [], (name, token))


# -- pipelines -----------------------------------------------------------------------------------


def _pipeline_names(container: Container) -> list[str]:
    names = []
    for pipeline_id in container.queries.aggregate_ids("Pipeline"):
        pipeline: object = container.app.repository.get(pipeline_id)
        if isinstance(pipeline, Pipeline):
            names.append(pipeline.name)
    return sorted(names)


@router.get("/pipelines")
def pipelines(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    rows = []
    counts: dict[str, int] = defaultdict(int)
    for row in container.queries.item_counts():
        counts[row["pipeline"]] += row["n"]
    for name in _pipeline_names(container):
        pipeline = container.app.pipeline(name)
        rows.append(
            {
                "name": name,
                "version": pipeline.version,
                "active": container.app.active_version(name)[1],
                "stages": pipeline.parsed.stage_names,
                "updated_at": pipeline.modified_on,
                "item_count": counts.get(name, 0),
            }
        )
    return page(request, "pipelines.html", user, pipelines=rows)


def _spec_text(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True)


@router.get("/pipelines/{name}")
def pipeline_page(
    name: str, request: Request, user: UserDep, container: ConsoleContainer
) -> HTMLResponse:
    notice = "Activated." if request.query_params.get("done") == "activated" else None
    return _pipeline_page(name, request, user, container, [], notice)


def _pipeline_page(
    name: str,
    request: Request,
    user: User,
    container: Container,
    problems: list[str],
    notice: str | None,
    status_code: int = 200,
) -> HTMLResponse:
    """A pipeline's versions (the active one marked), one spec, the diff between two versions,
    and its eval runs with each case."""
    app = container.app
    try:
        latest = app.pipeline(name)
    except NotFound:
        raise HTTPException(404, f"no pipeline {name!r}") from None
    history: list[Any] = [
        app.mapper.to_domain_event(stored)
        for stored, _ in container.queries.stored_events(Pipeline.create_id(name))
    ]
    versions = [
        {
            "version": e.originator_version,
            "at": e.timestamp,
            "actor": getattr(e, "actor", None),
            "spec": e.spec,
        }
        for e in history
        if hasattr(e, "spec")
    ]
    query = QueryReader(request.query_params)
    shown = query.number("version", 1, latest.version) or latest.version
    compare = query.number("compare", 1, latest.version)
    if compare is None and shown > 1 and "compare" not in request.query_params:
        compare = shown - 1
    spec = versions[shown - 1]["spec"]
    diff = None
    if compare is not None and compare != shown:
        diff = list(
            difflib.unified_diff(
                _spec_text(versions[compare - 1]["spec"]).splitlines(),
                _spec_text(spec).splitlines(),
                f"version {compare}",
                f"version {shown}",
                lineterm="",
            )
        )
    _, active = app.active_version(name)
    return page(
        request,
        "pipeline.html",
        user,
        name=name,
        versions=list(reversed(versions)),
        latest=latest.version,
        active=active,
        gated=app.pipeline_version(latest, active).parsed.eval_gate is not None,
        shown=shown,
        compare=compare,
        spec=_spec_text(spec),
        diff=diff,
        eval_runs=[run_body(run) for run in container.queries.eval_runs(name, limit=EVAL_RUNS)],
        problems=[*query.problems, *problems],
        notice=notice,
        status_code=status_code,
    )


@router.post("/pipelines/{name}/versions/{version}/activate")
async def activate_page(
    name: str, version: int, request: Request, user: UserDep, container: ConsoleContainer
) -> Response:
    """Activate a version (operators; forcing past the eval gate, admins): refused by the gate,
    the page says why."""
    fields = await checked_form(request, user)
    require_role(user, Role.OPERATOR)
    force = fields.get("force") == "true"
    if force:
        require_role(user, Role.ADMIN)
    try:
        await run_in_threadpool(activate, container, name, version, force, _by(request, user))
    except NotFound as error:
        raise HTTPException(404, str(error)) from None
    except DomainError as error:
        return await run_in_threadpool(
            _pipeline_page, name, request, user, container, [f"Refused: {error}"], None, 409
        )
    return see_other(f"/pipelines/{quote(name)}?done=activated")


# -- audit and projections -----------------------------------------------------------------------


@router.get("/audit")
def audit(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    query = QueryReader(request.query_params)
    before = query.number("before", 1)
    rows = container.queries.audit(
        after=0,
        limit=PAGE_SIZE,
        before=before or 2**62,
        actor=query.text("actor"),
        type=query.text("type", 100),
        item=query.uuid("item"),
        since=query.time("since"),
        until=query.time("until"),
    )
    titles = container.queries.item_titles([r["item_id"] for r in rows if r["item_id"]])
    fields = ("actor", "type", "item", "since", "until")
    given = {k: request.query_params[k] for k in fields if request.query_params.get(k)}
    older = rows[-1]["position"] if len(rows) == PAGE_SIZE else None
    return page(
        request,
        "audit.html",
        user,
        rows=rows,
        titles=titles,
        given=given,
        problems=query.problems,
        older_url="/audit?" + urlencode({**given, "before": older}) if older else None,
        newest_url="/audit?" + urlencode(given) if before else None,
        head=container.queries.log_head(),
    )


@router.get("/projections")
def projections(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    require_role(user, Role.OPERATOR)
    return page(
        request,
        "projections.html",
        user,
        statuses=projection_statuses(container),
        head=container.queries.log_head(),
    )
