"""What every console page shares: templates and their filters, the signed-in user, CSRF checks,
form and query parsing that turns bad input into a message rather than a traceback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from api.auth import Principal
from api.console.session import CSRF_FIELD, SESSION_COOKIE, Session, Sessions
from api.container import Container
from api.deps import get_container, request_context
from domain.agent import Role

HERE = Path(__file__).parent
MAX_FORM_FIELDS = 50

# Pages other than the sign-in page are never kept by a browser's or a proxy's cache.
NO_STORE = {"Cache-Control": "no-store"}
# What a console page may load and run: this server's own files, nothing inline, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _relative(delta_seconds: float) -> str:
    future = delta_seconds < 0
    seconds = abs(delta_seconds)
    if seconds < 45:
        text = f"{int(seconds)} s"
    elif seconds < 90 * 60:
        text = f"{round(seconds / 60)} min"
    elif seconds < 36 * 3600:
        text = f"{round(seconds / 3600)} h"
    else:
        text = f"{round(seconds / 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def when(value: datetime | None, now: datetime | None = None) -> Markup:
    """A time shown relative ("3 min ago"), with the absolute UTC time beside it on hover."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    absolute = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(), absolute, _relative((now - value).total_seconds())
    )


def absolute(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def usd(value: float | Decimal | int | None) -> str:
    """Dollars: cents for sums of a dollar or more, four places below (agent calls are cheap)."""
    if value is None:
        return "—"
    amount = float(value)
    if amount == 0:
        return "$0.00"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}"


def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def percent(part: float | Decimal, whole: float | Decimal) -> int:
    if not whole:
        return 0
    return max(0, min(100, round(float(part) / float(whole) * 100)))


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.autoescape = True
templates.env.filters.update(when=when, absolute=absolute, usd=usd, number=number, pretty=pretty)
templates.env.globals.update(percent=percent, urlencode=urlencode, Role=Role)


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class User:
    """The console's caller: its principal and its session (for the CSRF token)."""

    principal: Principal
    session: Session
    csrf: str

    @property
    def may_operate(self) -> bool:
        return self.principal.has(Role.OPERATOR)

    @property
    def is_admin(self) -> bool:
        return self.principal.has(Role.ADMIN)


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def _next_path(request: Request) -> str:
    if request.method == "GET" and not request.headers.get("hx-request"):
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{request.url.path}{query}"
    return "/"


def current_user(request: Request, container: Annotated[Container, Depends(get_container)]) -> User:
    """The signed-in principal, re-checked against its credential on every request."""
    sessions = sessions_of(request)
    session = sessions.read(request.cookies.get(SESSION_COOKIE), container.clock())
    principal = sessions.principal(session, container.app) if session else None
    if session is None or principal is None:
        raise SignInRequired(_next_path(request))
    request_context(request)["principal"] = principal.actor
    return User(principal, session, sessions.csrf_token(session))


UserDep = Annotated[User, Depends(current_user)]
ConsoleContainer = Annotated[Container, Depends(get_container)]


def require_role(user: User, role: str) -> None:
    """What a role may not do is refused here too, not only hidden."""
    if not user.principal.has(role):
        raise Forbidden(role)


class Forbidden(Exception):
    def __init__(self, role: str) -> None:
        super().__init__(role)
        self.role = role


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first of each name); nothing else is accepted."""
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


async def checked_form(request: Request, user: User) -> dict[str, str]:
    """The form, once its CSRF token matches the session's; otherwise 403 and nothing done."""
    fields = await form_fields(request)
    if not sessions_of(request).csrf_ok(user.session, fields.get(CSRF_FIELD)):
        raise CsrfRefused
    return fields


class CsrfRefused(Exception):
    pass


@dataclass
class QueryReader:
    """Reads query parameters by hand, so a value that does not parse becomes a message on the
    page (and is ignored) instead of a 422 body or a traceback."""

    params: Mapping[str, str]
    problems: list[str] = field(default_factory=list)

    def text(self, name: str, max_length: int = 200) -> str | None:
        value = self.params.get(name, "").strip()
        if not value:
            return None
        if len(value) > max_length:
            self.problems.append(f"{name} is longer than {max_length} characters; ignored")
            return None
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is not None and value not in choices:
            self.problems.append(f"{name} must be one of {', '.join(choices)}, not {value!r}")
            return None
        return value

    def number(self, name: str, low: int = 0, high: int = 2**62) -> int | None:
        value = self.text(name, 20)
        if value is None:
            return None
        if not value.isdigit() or not low <= int(value) <= high:
            self.problems.append(
                f"{name} must be a whole number from {low} to {high}, not {value!r}"
            )
            return None
        return int(value)

    def uuid(self, name: str) -> uuid.UUID | None:
        value = self.text(name, 60)
        if value is None:
            return None
        try:
            return uuid.UUID(value)
        except ValueError:
            self.problems.append(f"{name} must be an item id, not {value!r}")
            return None

    def time(self, name: str) -> datetime | None:
        value = self.text(name, 40)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.problems.append(
                f"{name} must be a date or time like 2025-01-31T12:00, not {value!r}"
            )
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def page(
    request: Request,
    template: str,
    user: User | None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "now": datetime.now(UTC), "path": request.url.path, **context},
        status_code=status_code,
        headers={**NO_STORE, **(headers or {})},
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=NO_STORE)


def sign_in_redirect(request: Request, next_path: str) -> Response:
    target = "/signin" + (f"?{urlencode({'next': next_path})}" if next_path != "/" else "")
    if request.headers.get("hx-request"):
        # A fragment request: have htmx load the sign-in page rather than swap it into a region.
        return Response(status_code=204, headers={"HX-Redirect": target, **NO_STORE})
    response = see_other(target)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
