"""Repeats are safe: the same request twice appends once; a different one under the same key is refused."""

from __future__ import annotations

import pytest

from tests.helpers import Api

pytestmark = pytest.mark.api

BODY = {"pipeline": "article", "topic": "t", "title": "once", "input": {"n": 1}}


@pytest.fixture
def ready(api: Api) -> Api:
    api.put_pipeline()
    api.add_agent("writer", stages=["research"])
    return api


def test_a_repeated_create_returns_the_first_answer_and_appends_nothing(ready: Api) -> None:
    """The same Idempotency-Key and body twice: one item, one answer."""
    headers = {**ready.as_("writer"), "Idempotency-Key": "k-1"}
    first = ready.client.post("/v1/items", json=BODY, headers=headers)
    head = ready.settle()
    second = ready.client.post("/v1/items", json=BODY, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert ready.settle() == head
    assert len(ready.client.get("/v1/items", headers=ready.admin).json()["items"]) == 1


def test_the_same_key_with_another_body_is_a_409(ready: Api) -> None:
    """A reused key with a different body is idempotency_mismatch, and nothing is appended."""
    headers = {**ready.as_("writer"), "Idempotency-Key": "k-2"}
    assert ready.client.post("/v1/items", json=BODY, headers=headers).status_code == 201
    head = ready.settle()
    response = ready.client.post("/v1/items", json={**BODY, "title": "twice"}, headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_mismatch"
    assert ready.settle() == head


def test_keys_belong_to_their_caller(ready: Api) -> None:
    """Two callers using the same key create two items."""
    ready.add_agent("other", stages=["research"])
    for name in ("writer", "other"):
        headers = {**ready.as_(name), "Idempotency-Key": "shared"}
        assert ready.client.post("/v1/items", json=BODY, headers=headers).status_code == 201
    ready.settle()
    assert len(ready.client.get("/v1/items", headers=ready.admin).json()["items"]) == 2


def test_a_repeated_completion_is_answered_again_and_a_rival_one_is_refused(ready: Api) -> None:
    """Completing a lease twice with the same report is idempotent; with another report, 409."""
    item = ready.create_item(as_="writer")
    lease = ready.claim("writer", "research")["lease"]["id"]
    report = {"output": {"x": 1}, "cost_usd": 0.1}
    first = ready.complete("writer", lease, **report)
    head = ready.settle()
    again = ready.complete("writer", lease, **report)
    assert again == first
    rival = ready.client.post(
        f"/v1/leases/{lease}/complete",
        json={**report, "cost_usd": 0.2},
        headers=ready.as_("writer"),
    )
    assert rival.status_code == 409
    assert rival.json()["code"] == "idempotency_mismatch"
    assert ready.settle() == head
    completions = [e for e in ready.events(item["id"]) if e["type"] == "StageCompleted"]
    assert len(completions) == 1


def test_a_repeated_agent_registration_shows_no_second_token(ready: Api) -> None:
    """Registering with the same key twice is one agent; the repeat does not reveal the token."""
    headers = {**ready.admin, "Idempotency-Key": "agent-1"}
    body = {"name": "late", "role": "agent", "stages": ["draft"]}
    first = ready.client.post("/v1/agents", json=body, headers=headers)
    second = ready.client.post("/v1/agents", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["token"]
    assert second.json()["token"] is None
    assert first.json()["id"] == second.json()["id"]
    mismatch = ready.client.post("/v1/agents", json={**body, "stages": []}, headers=headers)
    assert mismatch.status_code == 409
    assert mismatch.json()["code"] == "idempotency_mismatch"
