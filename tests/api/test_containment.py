"""Containment: a stage's max_concurrent and an agent's max_concurrent_leases cap the leases out
at once; a claim beyond a cap waits, then gets 204, and gets work once a lease ends."""

from __future__ import annotations

import pytest

from tests.helpers import Api

pytestmark = pytest.mark.api

CAPPED = {"stages": [{"name": "work", "max_concurrent": 1}, {"name": "ship"}]}


def test_a_stage_at_its_max_concurrent_makes_claims_wait(api: Api) -> None:
    """With one lease allowed at `work`, a second agent waits, gets 204, then the next item."""
    api.put_pipeline("capped", CAPPED)
    api.add_agent("a", stages=["work"])
    api.add_agent("b", stages=["work"])
    for n in range(2):
        api.create_item(pipeline="capped", title=f"#{n}")
    first = api.claim("a", "work")
    refused = api.client.post(
        "/v1/claims", json={"stage": "work", "wait_seconds": 1}, headers=api.as_("b")
    )
    assert refused.status_code == 204
    api.complete("a", first["lease"]["id"], output={})
    second = api.claim("b", "work", wait_seconds=5)
    assert second["item"]["id"] != first["item"]["id"]


def test_an_agent_at_its_max_concurrent_leases_waits(api: Api) -> None:
    """An agent registered with one lease at a time gets 204 for a second, until raised."""
    api.put_pipeline("open", {"stages": [{"name": "work"}]})
    response = api.client.post(
        "/v1/agents",
        json={"name": "solo", "role": "agent", "stages": ["work"], "max_concurrent_leases": 1},
        headers=api.admin,
    )
    assert response.status_code == 201, response.text
    assert response.json()["max_concurrent_leases"] == 1
    api.tokens["solo"] = response.json()["token"]
    for n in range(2):
        api.create_item(pipeline="open", title=f"#{n}")
    api.claim("solo", "work")
    refused = api.client.post(
        "/v1/claims", json={"stage": "work", "wait_seconds": 1}, headers=api.as_("solo")
    )
    assert refused.status_code == 204
    raised = api.client.put(
        "/v1/agents/solo/limits", json={"max_concurrent_leases": 2}, headers=api.admin
    )
    assert raised.status_code == 200, raised.text
    assert raised.json()["max_concurrent_leases"] == 2
    api.claim("solo", "work", wait_seconds=5)


def test_bad_limits_are_refused_naming_the_field(api: Api) -> None:
    """A cap below one, on a stage or an agent, is refused with 422 naming it."""
    bad_stage = {"stages": [{"name": "work", "max_concurrent": 0}]}
    response = api.client.put("/v1/pipelines/bad", json=bad_stage, headers=api.admin)
    assert response.status_code == 422
    assert "max_concurrent" in response.json()["detail"]
    api.add_agent("x", stages=["work"])
    response = api.client.put(
        "/v1/agents/x/limits", json={"max_concurrent_leases": 0}, headers=api.admin
    )
    assert response.status_code == 422
    assert "max_concurrent_leases" in response.text
    missing = api.client.put(
        "/v1/agents/nobody/limits", json={"max_concurrent_leases": 1}, headers=api.admin
    )
    assert missing.status_code == 404
