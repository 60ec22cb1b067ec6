"""The console's schedules page and a pipeline's report page (issue 11): the same reads as
`GET /v1/schedules` and `GET /v1/pipelines/{name}/report`."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from api.console.web import ConsoleContainer, QueryReader, UserDep, page
from api.routes.reports import judge, measure
from api.routes.schedules import schedule_body
from domain.errors import NotFound

router = APIRouter(include_in_schema=False)


@router.get("/schedules")
def schedules(request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    rows = [schedule_body(row) for row in container.queries.schedules()]
    return page(request, "schedules.html", user, schedules=rows)


@router.get("/pipelines/{name}/report")
def report(name: str, request: Request, user: UserDep, container: ConsoleContainer) -> HTMLResponse:
    """The pipeline's last days against its exit criteria: waiting vs working time per stage."""
    try:
        pipeline = container.app.pipeline(name)
    except NotFound:
        raise HTTPException(404, f"no pipeline {name!r}") from None
    query = QueryReader(request.query_params)
    days = query.number("days", 1, 366) or 7
    since = container.app.clock() - timedelta(days=days)
    figures = measure(name, days, container.queries.pipeline_report(name, since))
    criteria = judge(figures, dict(pipeline.parsed.exit_criteria))
    return page(
        request,
        "report.html",
        user,
        name=name,
        report=figures,
        criteria=criteria,
        problems=query.problems,
    )
