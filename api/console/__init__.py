"""The operator console at `/`: server-rendered pages, the vendored htmx, and `/docs` served from
the package so that it renders offline."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from api.console.incidents import router as incidents_router
from api.console.routes import router
from api.console.schedules import router as schedules_router
from api.console.web import (
    HERE,
    CsrfRefused,
    Forbidden,
    SignInRequired,
    page,
    sign_in_redirect,
)

STATIC_PREFIX = "/static"


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not an API client, and never under /v1/)."""
    if request.url.path.startswith("/v1/"):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed here"}
    return page(
        request,
        "error.html",
        None,
        status_code=status,
        title=titles.get(status, "Something went wrong"),
        message=message,
        status=status,
    )


def install_console(app: FastAPI) -> None:
    app.include_router(incidents_router)  # first: its item commands before the general ones
    app.include_router(router)
    app.include_router(schedules_router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=HERE / "static"), name="static")
    app.state.html_errors = error_page

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="stateowner API",
            swagger_js_url=f"{STATIC_PREFIX}/vendor/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PREFIX}/vendor/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PREFIX}/vendor/favicon-32x32.png",
            # Swagger UI would otherwise ask swagger.io to validate the schema.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.exception_handler(SignInRequired)
    async def on_sign_in_required(request: Request, error: SignInRequired) -> Response:
        return sign_in_redirect(request, error.next_path)

    @app.exception_handler(Forbidden)
    async def on_forbidden(request: Request, error: Forbidden) -> Response:
        return error_page(request, 403, f"This needs the role {error.role}.")

    @app.exception_handler(CsrfRefused)
    async def on_csrf_refused(request: Request, error: CsrfRefused) -> Response:
        return error_page(
            request,
            403,
            "The form was not sent from this console's page (its CSRF token is missing or "
            "stale); nothing was changed. Reload the page and try again.",
        )
