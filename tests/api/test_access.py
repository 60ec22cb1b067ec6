"""Who may do what: roles, scopes, disabled identities, and tokens that are never shown twice."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from api.container import Container
from api.settings import Settings
from domain.agent import Agent
from domain.values import By
from tests.helpers import Api, bearer

pytestmark = pytest.mark.api


@pytest.fixture
def team(api: Api) -> Api:
    api.put_pipeline()
    api.add_agent("writer", stages=["research", "draft"])
    api.add_agent("editor", stages=["edit"])
    api.add_agent("ops", role="operator")
    api.add_agent("audit", role="auditor")
    return api


def test_requests_without_a_valid_token_are_refused(team: Api) -> None:
    """No token, a malformed header or a made-up token all get 401 problems."""
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        bearer("so_nothing_here"),
        bearer("x" * 40),
    ):
        response = team.client.get("/v1/items", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("who", "method", "path", "body", "allowed"),
    [
        ("ops", "POST", "/v1/agents", {"name": "x", "role": "agent"}, False),
        ("audit", "GET", "/v1/agents", None, False),
        ("ops", "GET", "/v1/agents", None, True),
        ("audit", "PUT", "/v1/pipelines/p2", {"stages": [{"name": "a"}]}, False),
        ("ops", "PUT", "/v1/pipelines/p2", {"stages": [{"name": "a"}]}, True),
        ("writer", "PUT", "/v1/pipelines/p2", {"stages": [{"name": "a"}]}, False),
        ("audit", "POST", "/v1/items", {"pipeline": "article", "topic": "t", "title": "x"}, False),
        ("ops", "POST", "/v1/items", {"pipeline": "article", "topic": "t", "title": "x"}, True),
        ("writer", "GET", "/v1/events", None, False),
        ("audit", "GET", "/v1/events", None, True),
        ("audit", "GET", "/v1/projections", None, False),
        ("ops", "GET", "/v1/projections", None, True),
        ("ops", "POST", "/v1/claims", {"stage": "edit"}, False),
        ("audit", "PUT", "/v1/topics/t", {"owner": "me"}, False),
        ("writer", "PUT", "/v1/topics/t", {"owner": "me"}, True),
        ("audit", "GET", "/v1/pipelines/article", None, True),
    ],
)
def test_each_role_reaches_only_its_routes(
    team: Api, who: str, method: str, path: str, body: dict[str, object] | None, allowed: bool
) -> None:
    """A route answers its roles and refuses the rest with 403."""
    response = team.client.request(method, path, json=body, headers=team.as_(who))
    if allowed:
        assert response.status_code < 300, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"


def test_an_agent_cannot_claim_outside_its_scope(team: Api) -> None:
    """The writer may claim research, but edit is the editor's: 403, and nothing is claimed."""
    item = team.create_item(as_="writer")
    response = team.client.post("/v1/claims", json={"stage": "edit"}, headers=team.as_("writer"))
    assert response.status_code == 403
    assert "outside your scope" in response.json()["detail"]
    assert team.item(item["id"])["status"] == "ready"


def test_an_agent_cannot_report_on_another_agents_lease(team: Api) -> None:
    """Only the lease holder may complete its lease; the item stays claimed by it."""
    team.add_agent("writer2", stages=["research"])
    item = team.create_item(as_="writer")
    claimed = team.claim("writer", "research")
    lease = claimed["lease"]["id"]
    response = team.client.post(
        f"/v1/leases/{lease}/complete", json={}, headers=team.as_("writer2")
    )
    assert response.status_code == 403
    now = team.item(item["id"], min_position=claimed["item"]["position"])
    assert (now["status"], now["agent"]) == ("claimed", "writer")


def test_a_disabled_agent_is_refused_at_once(team: Api) -> None:
    """After disable, the agent's very next request is 401."""
    assert team.client.get("/v1/items", headers=team.as_("writer")).status_code == 200
    response = team.client.post("/v1/agents/writer/disable", headers=team.admin)
    assert response.status_code == 200
    assert team.client.get("/v1/items", headers=team.as_("writer")).status_code == 401
    again = team.client.post("/v1/agents/writer/disable", headers=team.admin)
    assert again.status_code == 409


def test_an_agent_changed_by_another_process_is_read_afresh(team: Api, settings: Settings) -> None:
    """The service remembers its callers, but a change made elsewhere (here: another process's
    application on the same database) reaches it by NOTIFY: the next requests see the new
    scope, and after a disable a 401, well inside the memory's own limit."""
    assert team.client.get("/v1/items", headers=team.as_("writer")).status_code == 200
    served: Container = team.client.app.state.container
    assert served.known_agents.get(Agent.create_id("writer")) is not None
    other = Container(settings).start()
    try:
        other.app.change_stages("writer", ["edit"], By("operator:elsewhere", "r"))
        assert _within(1.0, lambda: _claim_status(team, "research") == 403)
        other.app.disable_agent("writer", By("operator:elsewhere", "r"))
    finally:
        other.close()
    assert _within(1.0, lambda: _claim_status(team, "edit") == 401)


def _claim_status(team: Api, stage: str) -> int:
    response = team.client.post("/v1/claims", json={"stage": stage}, headers=team.as_("writer"))
    return response.status_code


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_tokens_are_never_listed_and_only_hashes_are_stored(team: Api) -> None:
    """The agents list shows no tokens, and the log holds no token in any event."""
    listing = team.client.get("/v1/agents", headers=team.admin).text
    log = team.client.get("/v1/events", params={"limit": 1000}, headers=team.admin).text
    for token in team.tokens.values():
        secret = token.split("_", 2)[2]
        assert secret not in listing
        assert secret not in log


def test_history_is_for_auditors_and_the_agents_that_worked_on_it(team: Api) -> None:
    """The writer who claimed the item may read its history; the editor, who did not, may not."""
    item = team.create_item(as_="ops")
    team.claim("writer", "research")
    path = f"/v1/items/{item['id']}/events"
    assert team.client.get(path, headers=team.as_("audit")).status_code == 200
    assert team.client.get(path, headers=team.as_("writer")).status_code == 200
    assert team.client.get(path, headers=team.as_("editor")).status_code == 403
    at = team.client.get(f"/v1/items/{item['id']}/at/1", headers=team.as_("writer"))
    assert at.status_code == 403
