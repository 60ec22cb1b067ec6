"""The service tried as an attacker or a careless client would: odd input is refused at the door,
naming where; a lease's reports belong to its holder; strangers learn nothing; histories page."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.helpers import Api

pytestmark = pytest.mark.api

SPEC = {"stages": [{"name": "work", "lease_seconds": 300}, {"name": "check"}]}


@pytest.fixture
def team(api: Api) -> Api:
    api.put_pipeline("p", SPEC)
    api.add_agent("worker", stages=["work"])
    api.add_agent("rival", stages=["work"])
    api.add_agent("checker", stages=["check"])
    return api


def _claimed(team: Api) -> tuple[dict[str, Any], str]:
    item = team.create_item(pipeline="p")
    return item, team.claim("worker", "work")["lease"]["id"]


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


# -- what the log cannot hold, refused at the door ---------------------------------------------

LONE = "\ud800"


def _json(value: Any) -> bytes:
    """JSON text as a careless client sends it: escapes for lone surrogates, bare NaN."""
    import json

    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


@pytest.mark.parametrize(
    ("where", "body", "location"),
    [
        ("an input value", {"input": {"k": f"a{LONE}"}}, "body.input.k"),
        ("an input key", {"input": {f"k{LONE}": 1}}, "body.input"),
        ("a nested list", {"input": {"k": [1, [2, LONE]]}}, "body.input.k[1][1]"),
        ("NaN", {"input": {"score": float("nan")}}, "body.input.score"),
        ("Infinity", {"input": {"score": float("inf")}}, "body.input.score"),
    ],
)
def test_an_item_input_the_log_cannot_hold_is_refused_naming_where(
    team: Api, where: str, body: dict[str, Any], location: str
) -> None:
    """Lone surrogates and non-finite numbers anywhere in an item's input are a 422 that names
    the place, and nothing is appended."""
    before = team.settle()
    content = _json({"pipeline": "p", "topic": "t", "title": "x", **body})
    response = team.client.post(
        "/v1/items",
        content=content,
        headers={**team.admin, "content-type": "application/json"},
    )
    problem = _problem(response, 422, "validation_error")
    assert [e["location"] for e in problem["errors"]] == [location], where
    assert team.settle() == before


def test_an_overflowing_number_is_refused_not_stored_as_null(team: Api) -> None:
    """1e400 in a completion's trace is refused, not silently turned into infinity or null."""
    _, lease = _claimed(team)
    response = team.client.post(
        f"/v1/leases/{lease}/complete",
        content=b'{"output": {"ok": true}, "trace": {"tokens": 1e400}}',
        headers={**team.as_("worker"), "content-type": "application/json"},
    )
    problem = _problem(response, 422, "validation_error")
    assert problem["errors"][0]["location"] == "body.trace.tokens"
    assert problem["errors"][0]["type"] == "non_finite"


def test_a_lone_surrogate_in_topic_metadata_or_output_is_refused(team: Api) -> None:
    """Topic metadata and a completion's output get the same door as an item's input."""
    topic = team.client.put(
        "/v1/topics/t",
        content=_json({"metadata": {"note": LONE}}),
        headers={**team.admin, "content-type": "application/json"},
    )
    assert _problem(topic, 422, "validation_error")["errors"][0]["location"] == "body.metadata.note"
    _, lease = _claimed(team)
    output = team.client.post(
        f"/v1/leases/{lease}/complete",
        content=_json({"output": [LONE]}),
        headers={**team.as_("worker"), "content-type": "application/json"},
    )
    assert _problem(output, 422, "validation_error")["errors"][0]["type"] == "lone_surrogate"


def test_json_nested_past_the_limit_is_refused(team: Api) -> None:
    """An input nested 5,000 deep is a 422, not a server error."""
    deep = b'{"pipeline": "p", "topic": "t", "title": "x", "input": {"k": ' + b"[" * 5000
    deep += b"]" * 5000 + b"}}"
    response = team.client.post(
        "/v1/items", content=deep, headers={**team.admin, "content-type": "application/json"}
    )
    assert "nesting deeper than 64" in _problem(response, 422, "validation_error")["detail"]


def test_a_toml_spec_nested_deep_or_with_nan_is_refused(team: Api) -> None:
    """A TOML pipeline spec nested 5,000 deep, or with nan, is a 422 naming where."""
    toml = {**team.admin, "content-type": "application/toml"}
    deep = "x = " + "[" * 5000 + "]" * 5000
    response = team.client.put("/v1/pipelines/toml", content=deep, headers=toml)
    assert "nesting deeper than" in _problem(response, 422, "validation_error")["detail"]
    nan = '[[stages]]\nname = "a"\nlease_seconds = nan\n'
    response = team.client.put("/v1/pipelines/toml", content=nan, headers=toml)
    problem = _problem(response, 422, "validation_error")
    assert problem["errors"][0]["location"] == "body.stages[0].lease_seconds"


def test_a_query_or_path_that_is_not_utf8_is_refused(team: Api) -> None:
    """A percent-encoded lone surrogate (CESU-8) in the query or the path is a 422."""
    query = team.client.get("/v1/items?topic=%ED%A0%80", headers=team.admin)
    assert _problem(query, 422, "validation_error")["errors"][0]["location"] == "query"
    path = team.client.get("/v1/topics/%ED%A0%80", headers=team.admin)
    assert _problem(path, 422, "validation_error")["errors"][0]["location"] == "path"


def test_a_request_id_is_echoed_only_when_it_is_plain(team: Api) -> None:
    """A plain X-Request-Id is echoed and recorded; anything else is replaced by a fresh id."""
    plain = team.client.get("/healthz", headers={"x-request-id": "trace-42.a:b"})
    assert plain.headers["x-request-id"] == "trace-42.a:b"
    odd = team.client.get("/healthz", headers={"x-request-id": "a b\tc"})
    assert odd.headers["x-request-id"] != "a b\tc"
    assert len(odd.headers["x-request-id"]) == 32


# -- spec bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"stages": [{"name": "a", "lease_seconds": 1e-300}]}, "stages[0].lease_seconds"),
        ({"stages": [{"name": "a", "lease_seconds": 0.5}]}, "stages[0].lease_seconds"),
        ({"stages": [{"name": "a", "lease_seconds": 86401}]}, "stages[0].lease_seconds"),
        ({"stages": [{"name": f"s{n}"} for n in range(5000)]}, "stages has 5000 stages"),
        (
            {"stages": [{"name": "a", "on": {f"o{n}": "a" for n in range(600)}}]},
            "route 600 outcomes",
        ),
        ({"stages": [{"name": "a", "on": {"x" * 190 + str(n): "a" for n in range(400)}}]}, "bytes"),
    ],
)
def test_a_spec_past_the_bounds_is_refused_naming_the_field(
    team: Api, spec: dict[str, Any], named: str
) -> None:
    """Leases shorter than a second or longer than a day, and specs too large, are 422s."""
    response = team.client.put("/v1/pipelines/big", json=spec, headers=team.admin)
    assert named in _problem(response, 422, "validation_error")["detail"]


# -- a lease belongs to its holder -----------------------------------------------------------------


def test_another_agent_cannot_replay_or_rival_a_finished_lease(team: Api) -> None:
    """Once the holder finished its lease, another agent sending the same report, or another
    one, is refused as forbidden — never answered with the holder's answer."""
    _, lease = _claimed(team)
    report = {"output": {"done": True}, "cost_usd": 0.1}
    team.complete("worker", lease, **report)
    for body in (report, {"output": {"done": False}}):
        response = team.client.post(
            f"/v1/leases/{lease}/complete", json=body, headers=team.as_("rival")
        )
        _problem(response, 403, "forbidden")
    again = team.client.post(
        f"/v1/leases/{lease}/complete", json=report, headers=team.as_("worker")
    )
    assert again.status_code == 200, "the holder's own repeat is still answered"


def test_the_holders_concurrent_heartbeats_never_see_a_conflict(team: Api) -> None:
    """Six threads heartbeating one lease at once all get 200: the holder never sees a 409 its
    own lease did not earn."""
    _, lease = _claimed(team)
    statuses: list[int] = []
    lock = threading.Lock()

    def beat() -> None:
        for _ in range(25):
            response = team.client.post(f"/v1/leases/{lease}/heartbeat", headers=team.as_("worker"))
            with lock:
                statuses.append(response.status_code)

    threads = [threading.Thread(target=beat) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 150


def test_a_stage_removed_from_an_agent_takes_its_lease_at_once(team: Api) -> None:
    """Removing the stage refuses the holder's next heartbeat and report at once; the sweeper
    revokes the lease and the stage is ready again for another agent."""
    item, lease = _claimed(team)
    changed = team.client.put(
        "/v1/agents/worker/stages", json={"stages": ["check"]}, headers=team.admin
    )
    assert changed.status_code == 200
    heartbeat = team.client.post(f"/v1/leases/{lease}/heartbeat", headers=team.as_("worker"))
    _problem(heartbeat, 403, "forbidden")
    report = team.client.post(f"/v1/leases/{lease}/complete", json={}, headers=team.as_("worker"))
    _problem(report, 403, "forbidden")
    container = team.client.app.state.container  # type: ignore[attr-defined]
    team.settle()
    container.sweeper.sweep()
    team.settle()
    claimed = team.claim("rival", "work")
    assert claimed["item"]["id"] == item["id"]
    types = [e["type"] for e in team.events(item["id"])]
    assert types[-4:] == ["StageClaimed", "LeaseRevoked", "StageReady", "StageClaimed"]


def test_a_disabled_agent_loses_its_lease(team: Api) -> None:
    """Disabling an agent refuses its token at once and its lease is revoked and retried."""
    item, lease = _claimed(team)
    assert team.client.post("/v1/agents/worker/disable", headers=team.admin).status_code == 200
    refused = team.client.post(f"/v1/leases/{lease}/heartbeat", headers=team.as_("worker"))
    _problem(refused, 401, "unauthorized")
    team.settle()
    team.client.app.state.container.sweeper.sweep()  # type: ignore[attr-defined]
    team.settle()
    assert team.item(item["id"])["status"] == "ready"
    revoked = [e for e in team.events(item["id"]) if e["type"] == "LeaseRevoked"]
    assert revoked[0]["data"]["reason"] == "worker is disabled for stage 'work'"


# -- strangers learn nothing -----------------------------------------------------------------------


def test_every_bad_token_gets_the_same_answer(team: Api) -> None:
    """A random token, an unknown agent's, a wrong secret and a disabled agent's token are all
    refused with one and the same detail, so agent names cannot be probed."""
    worker = team.tokens["worker"]
    prefix, agent_hex, _ = worker.split("_", 2)
    team.client.post("/v1/agents/rival/disable", headers=team.admin)
    tokens = [
        "garbage",
        f"{prefix}_{'0' * 32}_secret",
        f"{prefix}_{agent_hex}_wrong-secret",
        team.tokens["rival"],
    ]
    details = set()
    for token in tokens:
        response = team.client.get("/v1/items", headers={"Authorization": f"Bearer {token}"})
        details.add(_problem(response, 401, "unauthorized")["detail"])
        assert response.headers["www-authenticate"] == "Bearer"
    assert details == {"the token is not valid"}


def test_readiness_tells_strangers_only_ok_or_failing(team: Api) -> None:
    """/readyz answers each check with ok or failing; the reasons are for operators only."""
    ready = team.client.get("/readyz").json()
    assert set(ready["checks"].values()) <= {"ok", "failing"}
    assert team.client.get("/v1/health").status_code == 401
    detailed = team.client.get("/v1/health", headers=team.admin).json()
    assert {f["name"] for f in detailed["followers"]} == {"projections", "bus", "webhooks"}


# -- everything that grows pages -------------------------------------------------------------------


def test_an_items_history_pages(team: Api) -> None:
    """250 heartbeats later, the history comes 100 events a page, in order, every event once."""
    item, lease = _claimed(team)
    for _ in range(250):
        team.client.post(f"/v1/leases/{lease}/heartbeat", headers=team.as_("worker"))
    versions: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = team.client.get(
            f"/v1/items/{item['id']}/events", params=params, headers=team.admin
        ).json()
        pages += 1
        assert len(page["events"]) <= 100
        versions += [event["version"] for event in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert versions == list(range(1, 254))


def test_an_items_runs_page(team: Api) -> None:
    """Five failed attempts page two runs at a time, each run whole, none twice."""
    team.put_pipeline(
        "flaky", {"stages": [{"name": "work", "max_attempts": 10, "retry_backoff_seconds": 0}]}
    )
    item = team.create_item(pipeline="flaky")
    for attempt in range(5):
        lease = team.claim("worker", "work")["lease"]["id"]
        response = team.client.post(
            f"/v1/leases/{lease}/fail", json={"error": f"try {attempt}"}, headers=team.as_("worker")
        )
        assert response.status_code == 200
        team.settle()
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = team.client.get(
            f"/v1/items/{item['id']}/runs", params=params, headers=team.admin
        ).json()
        assert len(page["runs"]) <= 2
        runs += page["runs"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [run["attempt"] for run in runs] == [1, 2, 3, 4, 5]
    assert [run["error"] for run in runs] == [f"try {n}" for n in range(5)]
    assert all(run["result"] == "failed" for run in runs)


@pytest.fixture
def unexpected(settings: Settings) -> Iterator[TestClient]:
    """The app with a part swapped for one that fails unexpectedly."""
    from api.deps import request_id

    app = create_app(settings)

    async def broken() -> str:
        raise RuntimeError("a bug")

    app.dependency_overrides[request_id] = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_an_unexpected_error_is_a_500_problem_with_the_request_id(unexpected: TestClient) -> None:
    """A bug answers 500 as a problem that names the request id the log holds it under."""
    response = unexpected.put(
        "/v1/topics/t", json={}, headers={"Authorization": "Bearer test-admin-token"}
    )
    problem = _problem(response, 500, "internal")
    assert response.headers["x-request-id"] in problem["detail"]
    assert "a bug" not in response.text
