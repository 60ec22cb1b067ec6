"""The console's security and bad input, through the ASGI app: session cookies, CSRF, roles
refused server-side, escaping, and pages instead of tracebacks."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.console.session import SESSION_COOKIE
from api.settings import Settings
from domain.application import utc_now
from tests.conftest import ADMIN_TOKEN
from tests.helpers import Api

pytestmark = pytest.mark.api

PARKING_SPEC = {"stages": [{"name": "work", "max_attempts": 1}, {"name": "check"}]}
SCRIPT_TITLE = "<script>alert('owned')</script>"


@dataclass
class Clock:
    shift: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.shift


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings, clock=clock)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def team(client: TestClient) -> Api:
    api = Api(client)
    api.put_pipeline("flow", PARKING_SPEC)
    api.add_agent("worker", stages=["work"])
    api.add_agent("ops", role="operator")
    api.add_agent("reader", role="auditor")
    return api


def parked_item(team: Api, title: str = "stuck one") -> str:
    item = team.create_item(pipeline="flow", title=title)
    lease = team.claim("worker", "work")["lease"]["id"]
    response = team.client.post(
        f"/v1/leases/{lease}/fail",
        json={"error": "boom", "retryable": False},
        headers=team.as_("worker"),
    )
    assert response.status_code == 200, response.text
    team.settle()
    assert team.item(item["id"])["status"] == "parked"
    item_id: str = item["id"]
    return item_id


def sign_in(client: TestClient, token: str) -> str:
    """Sign in through the form as a browser would; returns the CSRF token of the next page."""
    client.cookies.clear()
    form = client.get("/signin")
    signin_token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
    assert signin_token
    response = client.post("/signin", data={"token": token, "signin_token": signin_token[1]})
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found[1]


def html(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Accept": "text/html,application/xhtml+xml", **(headers or {})}


class TestSignIn:
    def test_the_token_appears_in_no_cookie_and_no_page(
        self, client: TestClient, team: Api
    ) -> None:
        """After signing in, neither the session cookie nor any page carries the token."""
        token = team.tokens["ops"]
        sign_in(client, token)
        session = client.cookies.get(SESSION_COOKIE)
        assert session
        assert token not in session
        for path in ("/", "/items", "/agents", "/budgets", "/audit", "/projections"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert token not in response.text

    def test_the_session_cookie_flags(self, client: TestClient, team: Api) -> None:
        """The Set-Cookie of a sign-in says HttpOnly, SameSite=Strict, Path=/ and a Max-Age."""
        form = client.get("/signin")
        signin_token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
        assert signin_token
        response = client.post(
            "/signin", data={"token": team.tokens["ops"], "signin_token": signin_token[1]}
        )
        set_cookie = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
        session = next(c for c in set_cookie if c.startswith(f"{SESSION_COOKIE}="))
        assert "httponly" in session.lower()
        assert "samesite=strict" in session.lower()
        assert "path=/" in session.lower()
        assert "max-age=" in session.lower()
        assert team.tokens["ops"] not in session

    def test_a_wrong_token_gets_the_form_again_and_no_session(
        self, client: TestClient, team: Api
    ) -> None:
        """A made-up token is refused with a message; no session cookie is set."""
        form = client.get("/signin")
        signin_token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
        assert signin_token
        response = client.post(
            "/signin", data={"token": "so_bogus", "signin_token": signin_token[1]}
        )
        assert response.status_code == 401
        assert "not valid" in response.text
        assert SESSION_COOKIE not in client.cookies

    def test_an_agent_cannot_sign_in(self, client: TestClient, team: Api) -> None:
        """The console is for admins, operators and auditors; an agent's token is refused."""
        form = client.get("/signin")
        signin_token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
        assert signin_token
        response = client.post(
            "/signin", data={"token": team.tokens["worker"], "signin_token": signin_token[1]}
        )
        assert response.status_code == 403
        assert SESSION_COOKIE not in client.cookies

    def test_a_sign_in_post_without_the_forms_token_is_refused(
        self, client: TestClient, team: Api
    ) -> None:
        """A sign-in posted from elsewhere (no matching form token) signs nobody in."""
        response = client.post("/signin", data={"token": ADMIN_TOKEN})
        assert response.status_code == 403
        assert SESSION_COOKIE not in client.cookies

    def test_sign_out_ends_the_session(self, client: TestClient, team: Api) -> None:
        """After sign-out the console sends the browser back to sign in."""
        csrf = sign_in(client, ADMIN_TOKEN)
        assert client.post("/signout", data={"csrf": csrf}).status_code == 303
        assert client.get("/").headers["location"] == "/signin"

    def test_next_never_leaves_the_site(self, client: TestClient, team: Api) -> None:
        """A next= pointing at another site lands on the overview instead."""
        form = client.get("/signin", params={"next": "//evil.example/x"})
        assert 'name="next" value="/"' in form.text


class TestSessions:
    def test_a_tampered_cookie_sends_the_browser_to_sign_in(
        self, client: TestClient, team: Api
    ) -> None:
        """A cookie whose payload was changed (say, to admin) is not a session."""
        sign_in(client, team.tokens["reader"])
        body, mac = client.cookies[SESSION_COOKIE].split(".")
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["r"] = "admin"
        forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, f"{forged}.{mac}")
        response = client.get("/agents", headers=html())
        assert response.status_code == 303
        assert response.headers["location"].startswith("/signin")

    def test_an_expired_session_sends_the_browser_to_sign_in(
        self, client: TestClient, team: Api, clock: Clock, settings: Settings
    ) -> None:
        """Past its lifetime the session is refused, and the page asked for is remembered."""
        sign_in(client, ADMIN_TOKEN)
        assert client.get("/items").status_code == 200
        clock.shift = timedelta(minutes=settings.session_minutes + 1)
        response = client.get("/items?status=parked")
        assert response.status_code == 303
        assert response.headers["location"] == "/signin?next=%2Fitems%3Fstatus%3Dparked"

    def test_disabling_or_rotating_ends_an_agents_sessions(
        self, client: TestClient, team: Api
    ) -> None:
        """The session follows its credential: rotated or disabled, the next request signs out."""
        sign_in(client, team.tokens["ops"])
        assert client.get("/").status_code == 200
        assert client.post("/v1/agents/ops/rotate", headers=team.admin).status_code == 200
        assert client.get("/").status_code == 303
        sign_in(client, team.tokens["reader"])
        assert client.post("/v1/agents/reader/disable", headers=team.admin).status_code == 200
        assert client.get("/").status_code == 303


class TestCsrfAndRoles:
    def test_a_form_post_without_the_csrf_token_is_refused_and_changes_nothing(
        self, client: TestClient, team: Api
    ) -> None:
        """Retry without (or with a wrong) CSRF token: 403, and the item's log is unchanged."""
        item_id = parked_item(team)
        before = team.events(item_id)
        sign_in(client, team.tokens["ops"])
        for data in ({}, {"csrf": "not-the-token"}):
            response = client.post(f"/items/{item_id}/retry", data=data, headers=html())
            assert response.status_code == 403
            assert "nothing was changed" in response.text
        response = client.post(
            "/budgets", data={"scope": "global", "alert_usd": "1", "halt_usd": "2"}
        )
        assert response.status_code == 403
        assert team.events(item_id) == before
        assert client.get("/v1/budgets", headers=team.admin).json() == []

    def test_an_auditor_sees_no_buttons_and_is_refused_server_side(
        self, client: TestClient, team: Api
    ) -> None:
        """An auditor's item page has no operator buttons, and posting the command anyway is
        refused with 403 and changes nothing."""
        item_id = parked_item(team)
        before = team.events(item_id)
        csrf = sign_in(client, team.tokens["reader"])
        page = client.get(f"/items/{item_id}")
        assert page.status_code == 200
        assert "/retry" not in page.text
        assert "/cancel" not in page.text
        for command in ("retry", "cancel"):
            response = client.post(
                f"/items/{item_id}/{command}", data={"csrf": csrf}, headers=html()
            )
            assert response.status_code == 403
        assert team.events(item_id) == before
        assert client.get("/agents", headers=html()).status_code == 403
        refused = client.post("/agents/worker/disable", data={"csrf": csrf}, headers=html())
        assert refused.status_code == 403
        assert 'href="/agents"' not in client.get("/").text

    def test_an_operators_retry_is_recorded_with_its_actor(
        self, client: TestClient, team: Api
    ) -> None:
        """The operator's retry goes through the application: the stage is ready again and the
        event names operator:ops."""
        item_id = parked_item(team)
        sign_in(client, team.tokens["ops"])
        page = client.get(f"/items/{item_id}")
        assert f'action="/items/{item_id}/retry"' in page.text
        response = client.post(f"/items/{item_id}/retry", data={"csrf": csrf_of(page.text)})
        assert response.status_code == 303
        last = team.events(item_id)[-1]
        assert (last["type"], last["actor"], last["data"]["reason"]) == (
            "StageReady",
            "operator:ops",
            "manual",
        )
        assert "Retried" in client.get(response.headers["location"]).text

    def test_a_command_the_state_does_not_allow_is_a_message(
        self, client: TestClient, team: Api
    ) -> None:
        """Resuming an item that is not halted answers 409 with the reason on the page."""
        item_id = parked_item(team)
        csrf = sign_in(client, ADMIN_TOKEN)
        response = client.post(f"/items/{item_id}/resume", data={"csrf": csrf})
        assert response.status_code == 409
        assert "only a halted item can be resumed" in response.text

    def test_odd_tokens_are_refusals_not_errors(self, client: TestClient, team: Api) -> None:
        """Non-ASCII CSRF tokens, sign-in form tokens and cookies are refused, never a 500."""
        csrf = sign_in(client, ADMIN_TOKEN)
        refused = client.post("/budgets", data={"csrf": "é" + csrf, "scope": "global"})
        assert refused.status_code == 403
        client.cookies.clear()
        client.get("/signin")
        odd_form = client.post("/signin", data={"token": ADMIN_TOKEN, "signin_token": "é"})
        assert odd_form.status_code == 403
        client.cookies.clear()
        odd_cookie = {"cookie": f"{SESSION_COOKIE}=é.é".encode()}
        assert client.get("/", headers=odd_cookie).status_code == 303  # type: ignore[dict-item]
        assert 'name="next" value="/"' in client.get("/signin", params={"next": "/\\evil"}).text


class TestRendering:
    def test_every_value_is_escaped(self, client: TestClient, team: Api) -> None:
        """An item titled <script> shows as text on the list, its page and the overview."""
        item_id = parked_item(team, title=SCRIPT_TITLE)
        sign_in(client, ADMIN_TOKEN)
        for path in ("/items", f"/items/{item_id}", "/", "/audit"):
            text = client.get(path).text
            assert "<script>alert" not in text, path
        assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in client.get("/items").text

    def test_unknown_pages_are_html_for_browsers_and_problems_for_api_clients(
        self, client: TestClient, team: Api
    ) -> None:
        """A browser asking for a missing page gets an HTML 404; an API client problem+json."""
        sign_in(client, ADMIN_TOKEN)
        page = client.get("/no/such/page", headers=html())
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert "Not found" in page.text
        problem = client.get("/no/such/page")
        assert problem.status_code == 404
        assert problem.headers["content-type"] == "application/problem+json"
        api = client.get("/v1/nothing", headers=html())
        assert api.headers["content-type"] == "application/problem+json"
        missing = client.get("/items/00000000-0000-0000-0000-000000000000", headers=html())
        assert missing.status_code == 404
        assert "text/html" in missing.headers["content-type"]
        assert client.get("/items/not-an-id", headers=html()).status_code == 404

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("/items?status=bogus", "status must be one of"),
            ("/items?cursor=garbage", "cursor is not one this console handed out"),
            ("/audit?item=nope&since=yesterday", "item must be an item id"),
            ("/audit?before=-3", "before must be a whole number"),
        ],
    )
    def test_query_strings_that_do_not_parse_are_shown_as_messages(
        self, client: TestClient, team: Api, path: str, message: str
    ) -> None:
        """A filter that does not parse is named on the page, which still answers 200."""
        sign_in(client, ADMIN_TOKEN)
        response = client.get(path)
        assert response.status_code == 200
        assert message in response.text
        assert "Traceback" not in response.text

    def test_a_bad_budget_is_a_message_and_saves_nothing(
        self, client: TestClient, team: Api
    ) -> None:
        """A budget whose amounts do not parse is refused on the page, with nothing recorded."""
        csrf = sign_in(client, ADMIN_TOKEN)
        response = client.post(
            "/budgets", data={"csrf": csrf, "scope": "global", "alert_usd": "lots", "halt_usd": "2"}
        )
        assert response.status_code == 422
        assert "alert must be an amount in dollars" in response.text
        assert client.get("/v1/budgets", headers=team.admin).json() == []

    def test_docs_load_swagger_ui_from_the_package(self, client: TestClient) -> None:
        """/docs refers only to this server's own files, and they are served."""
        page = client.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', page.text)
        assert sources
        assert all(s.startswith("/static/vendor/") for s in sources), sources
        for source in sources:
            assert client.get(source).status_code == 200
        assert client.get("/openapi.json").status_code == 200
