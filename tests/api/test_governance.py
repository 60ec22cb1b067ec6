"""Governance on the log: budgets and the breaker, item budgets, runs and traces, identities, audit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.test_leases import Clock
from tests.helpers import Api

pytestmark = pytest.mark.api


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gov(settings: Settings, clock: Clock) -> Iterator[Api]:
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        api = Api(client)
        api.put_pipeline("p", {"stages": [{"name": "work"}, {"name": "review"}]})
        api.add_agent("bot", stages=["work", "review"])
        api.add_agent("other", stages=["work", "review"])
        yield api


def _spend(
    api: Api, agent: str, cost: float, topic: str = "t", stage: str = "work"
) -> dict[str, Any]:
    api.create_item(topic=topic, pipeline="p")
    claimed = api.claim(agent, stage)
    api.complete(agent, claimed["lease"]["id"], cost_usd=cost)
    api.settle()
    return claimed


def _budget(api: Api, scope: str) -> dict[str, Any]:
    budgets = {b["scope"]: b for b in api.client.get("/v1/budgets", headers=api.admin).json()}
    return budgets[scope]


def _events_of_type(api: Api, type_: str) -> list[dict[str, Any]]:
    response = api.client.get("/v1/audit", params={"type": type_}, headers=api.admin)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def _wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _put_budget(api: Api, scope: str, alert: float, halt: float) -> dict[str, Any]:
    response = api.client.put(
        f"/v1/budgets/{scope}", json={"alert_usd": alert, "halt_usd": halt}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_alert_then_halt_then_423_then_reset(gov: Api) -> None:
    """Spend crosses alert (one BudgetAlerted), then halt (BreakerOpened, claims 423) until a reset."""
    assert _put_budget(gov, "agent:bot", 0.5, 1.0)["state"] == "ok"
    _spend(gov, "bot", 0.6)
    assert _budget(gov, "agent:bot")["state"] == "alerting"
    _wait_for(lambda: len(_events_of_type(gov, "BudgetAlerted")) == 1)

    _spend(gov, "bot", 0.5)
    assert _budget(gov, "agent:bot")["state"] == "halted"
    gov.create_item(pipeline="p")
    refused = gov.client.post("/v1/claims", json={"stage": "work"}, headers=gov.as_("bot"))
    assert refused.status_code == 423
    problem = refused.json()
    assert (problem["code"], problem["scope"], problem["spent_usd"], problem["halt_usd"]) == (
        "budget_halted",
        "agent:bot",
        pytest.approx(1.1),
        1.0,
    )
    assert gov.claim("other", "work")["item"]["pipeline"] == "p", "other scopes keep working"
    _wait_for(lambda: len(_events_of_type(gov, "BreakerOpened")) == 1)
    assert len(_events_of_type(gov, "BudgetAlerted")) == 1, "alerted once per window"

    reset = gov.client.post("/v1/budgets/agent:bot/reset", headers=gov.admin)
    assert reset.status_code == 200
    assert reset.json()["state"] == "alerting"
    gov.create_item(pipeline="p")
    assert gov.claim("bot", "work")["lease"]["stage"] == "work"
    assert [e["actor"] for e in _events_of_type(gov, "BreakerReset")] == ["admin:builtin"]


def test_a_new_day_closes_the_breaker(gov: Api, clock: Clock) -> None:
    """The breaker opened today is closed at midnight: the window rolls over."""
    _put_budget(gov, "global", 0.1, 0.2)
    _spend(gov, "bot", 0.3)
    gov.create_item(pipeline="p")
    assert (
        gov.client.post("/v1/claims", json={"stage": "work"}, headers=gov.as_("bot")).status_code
        == 423
    )
    clock.now = (clock.now + timedelta(days=1)).replace(hour=0, minute=0, second=1)
    assert gov.claim("bot", "work")["lease"]["stage"] == "work"
    assert _budget(gov, "global")["spent_usd"] == 0


def test_raising_the_limit_above_spend_closes_the_breaker(gov: Api) -> None:
    """A halted stage opens again once its halt limit is raised above what it spent."""
    _put_budget(gov, "stage:work", 0.1, 0.2)
    _spend(gov, "bot", 0.3)
    gov.create_item(pipeline="p")
    assert (
        gov.client.post("/v1/claims", json={"stage": "work"}, headers=gov.as_("other")).status_code
        == 423
    )
    assert _put_budget(gov, "stage:work", 0.5, 1.0)["state"] == "ok"
    assert gov.claim("other", "work")["lease"]["stage"] == "work"


def test_a_halted_topic_holds_its_items_and_serves_the_rest(gov: Api) -> None:
    """With topic:hot halted, a claim skips its items and hands out another topic's."""
    _put_budget(gov, "topic:hot", 0.1, 0.2)
    _spend(gov, "bot", 0.3, topic="hot")
    gov.create_item(pipeline="p", topic="hot")
    cold = gov.create_item(pipeline="p", topic="cold")
    assert gov.claim("bot", "work")["item"]["id"] == cold["id"]
    assert (
        gov.client.post("/v1/claims", json={"stage": "work"}, headers=gov.as_("bot")).status_code
        == 204
    )


def test_spend_is_attributed_to_agent_stage_and_topic(gov: Api) -> None:
    """Each report's cost counts against its agent, its stage, its item's topic and the total."""
    for scope in ("global", "agent:bot", "agent:other", "stage:work", "topic:a", "topic:b"):
        _put_budget(gov, scope, 100, 200)
    _spend(gov, "bot", 1.25, topic="a")
    _spend(gov, "other", 0.5, topic="b")
    spent = {
        b["scope"]: b["spent_usd"] for b in gov.client.get("/v1/budgets", headers=gov.admin).json()
    }
    assert spent == {
        "global": pytest.approx(1.75),
        "agent:bot": pytest.approx(1.25),
        "agent:other": pytest.approx(0.5),
        "stage:work": pytest.approx(1.75),
        "topic:a": pytest.approx(1.25),
        "topic:b": pytest.approx(0.5),
    }
    agents = {
        a["name"]: a for a in gov.client.get("/v1/agents", headers=gov.admin).json()["agents"]
    }
    assert agents["bot"]["spent_today_usd"] == pytest.approx(1.25)
    assert agents["bot"]["completions"] == 1


def test_an_item_over_its_budget_halts_and_resume_continues(
    settings: Settings, clock: Clock
) -> None:
    """Past item_budget_usd the bus halts the item instead of advancing; resume moves it on."""
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        api = Api(client)
        api.put_pipeline(
            "capped", {"stages": [{"name": "work"}, {"name": "review"}], "item_budget_usd": 1.0}
        )
        api.add_agent("bot", stages=["work", "review"])
        item = api.create_item(pipeline="capped")
        api.complete("bot", api.claim("bot", "work")["lease"]["id"], cost_usd=1.2)
        api.settle()
        halted = api.item(item["id"])
        assert halted["status"] == "halted"
        last = api.events(item["id"])[-1]
        assert (last["type"], last["data"]["reason"]) == ("ItemHalted", "budget")
        assert (
            api.client.post(
                "/v1/claims", json={"stage": "review"}, headers=api.as_("bot")
            ).status_code
            == 204
        )
        resumed = api.client.post(f"/v1/items/{item['id']}/resume", headers=api.admin)
        assert resumed.status_code == 200
        assert (resumed.json()["item"]["stage"], resumed.json()["item"]["status"]) == (
            "review",
            "ready",
        )
        assert api.claim("bot", "review")["item"]["id"] == item["id"]


def test_runs_list_every_attempt_with_its_trace(gov: Api, clock: Clock) -> None:
    """A failed then completed stage shows two runs, each with agent, times, result, cost and trace."""
    gov.put_pipeline("retrying", {"stages": [{"name": "work", "retry_backoff_seconds": 0}]})
    item = gov.create_item(pipeline="retrying")
    first = gov.claim("bot", "work")["lease"]["id"]
    gov.client.post(
        f"/v1/leases/{first}/fail",
        json={"error": "timeout", "cost_usd": 0.1, "trace": {"tool_calls": [{"tool": "search"}]}},
        headers=gov.as_("bot"),
    )
    gov.settle()
    second = gov.claim("other", "work")["lease"]["id"]
    gov.complete(
        "other",
        second,
        cost_usd=0.3,
        tokens_in=10,
        tokens_out=4,
        duration_ms=900,
        trace={"model": "m"},
    )
    runs = gov.client.get(f"/v1/items/{item['id']}/runs", headers=gov.admin).json()["runs"]
    assert [(r["agent"], r["attempt"], r["result"]) for r in runs] == [
        ("bot", 1, "failed"),
        ("other", 2, "completed"),
    ]
    assert runs[0]["error"] == "timeout"
    assert runs[0]["trace"] == {"tool_calls": [{"tool": "search"}]}
    assert (runs[1]["cost_usd"], runs[1]["tokens"], runs[1]["duration_ms"]) == (
        0.3,
        {"in": 10, "out": 4},
        900,
    )
    assert runs[1]["claimed_at"] <= runs[1]["finished_at"]


def test_a_trace_over_the_limit_is_refused_with_413(gov: Api) -> None:
    """A trace above 256 KiB is refused and the lease is still held."""
    item = gov.create_item(pipeline="p")
    lease = gov.claim("bot", "work")["lease"]["id"]
    response = gov.client.post(
        f"/v1/leases/{lease}/complete",
        json={"trace": {"blob": "x" * (300 * 1024)}},
        headers=gov.as_("bot"),
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    gov.settle()
    assert gov.item(item["id"])["status"] == "claimed"


def test_a_rotated_token_replaces_the_old_one(gov: Api) -> None:
    """After rotation the old token is refused (401) and the new one works."""
    old = gov.tokens["bot"]
    response = gov.client.post("/v1/agents/bot/rotate", headers=gov.admin)
    assert response.status_code == 200
    new = response.json()["token"]
    assert new != old
    assert (
        gov.client.get("/v1/items", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    )
    assert (
        gov.client.get("/v1/items", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    )


def test_changing_an_agents_stages_changes_what_it_may_claim(gov: Api) -> None:
    """Moved from work to review, the agent is refused work (403) and may claim review."""
    response = gov.client.put(
        "/v1/agents/bot/stages", json={"stages": ["review"]}, headers=gov.admin
    )
    assert response.status_code == 200
    assert (
        gov.client.post("/v1/claims", json={"stage": "work"}, headers=gov.as_("bot")).status_code
        == 403
    )
    assert (
        gov.client.post("/v1/claims", json={"stage": "review"}, headers=gov.as_("bot")).status_code
        == 204
    )


def test_audit_answers_who_did_what(gov: Api) -> None:
    """The audit feed filters by actor, type and item, and pages."""
    _spend(gov, "bot", 0.1)
    claimed = _spend(gov, "other", 0.1)
    item_id = claimed["item"]["id"]
    by_other = gov.client.get(
        "/v1/audit", params={"actor": "agent:other"}, headers=gov.admin
    ).json()["entries"]
    assert {e["type"] for e in by_other} == {"StageClaimed", "StageCompleted"}
    on_item = gov.client.get("/v1/audit", params={"item": item_id}, headers=gov.admin).json()[
        "entries"
    ]
    assert [e["type"] for e in on_item][:2] == ["ItemCreated", "StageReady"]
    first_page = gov.client.get("/v1/audit", params={"limit": 3}, headers=gov.admin).json()
    second_page = gov.client.get(
        "/v1/audit", params={"limit": 3, "after": first_page["next_after"]}, headers=gov.admin
    ).json()
    assert first_page["entries"][-1]["position"] < second_page["entries"][0]["position"]
    assert gov.client.get("/v1/audit", headers=gov.as_("bot")).status_code == 403


def test_metrics_show_spend_and_breakers(gov: Api) -> None:
    """/metrics exposes spend per scope, breaker state and refused claims."""
    _put_budget(gov, "agent:bot", 0.1, 0.2)
    _spend(gov, "bot", 0.3)
    gov.create_item(pipeline="p")
    gov.client.post("/v1/claims", json={"stage": "work"}, headers=gov.as_("bot"))
    text = gov.client.get("/metrics").text
    assert 'stateowner_spend_usd{scope="agent:bot"} 0.3' in text
    assert 'stateowner_breaker_state{scope="agent:bot"} 2.0' in text
    assert 'stateowner_claims_total{result="budget_halted",stage="work"} 1.0' in text


@pytest.mark.parametrize(
    ("scope", "body"),
    [
        ("agent:bot", {"alert_usd": 2, "halt_usd": 1}),
        ("agent:bot", {"alert_usd": 1, "halt_usd": 1}),
        ("agent:bot", {"alert_usd": -1, "halt_usd": 1}),
        ("nowhere", {"alert_usd": 1, "halt_usd": 2}),
        ("agent:", {"alert_usd": 1, "halt_usd": 2}),
    ],
)
def test_bad_budgets_are_refused(gov: Api, scope: str, body: dict[str, Any]) -> None:
    """alert must be below halt, limits positive, scopes well formed: 422, nothing written."""
    response = gov.client.put(f"/v1/budgets/{scope}", json=body, headers=gov.admin)
    assert response.status_code == 422, response.text
    assert gov.client.get("/v1/budgets", headers=gov.admin).json() == []
