"""Leases: heartbeats extend them, expiry loses them, and failures retry or park."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.helpers import Api

pytestmark = pytest.mark.api


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(settings: Settings, clock: Clock) -> Iterator[Api]:
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        api = Api(client)
        api.put_pipeline(
            spec={
                "stages": [
                    {
                        "name": "research",
                        "lease_seconds": 60,
                        "max_attempts": 2,
                        "retry_backoff_seconds": 10,
                    },
                    {"name": "draft"},
                ]
            }
        )
        api.add_agent("writer", stages=["research"])
        yield api


def test_a_heartbeat_extends_the_lease(timed: Api, clock: Clock) -> None:
    """Heartbeating at 50 s moves the expiry to 60 s after the heartbeat."""
    timed.create_item(as_="writer")
    lease = timed.claim("writer", "research")["lease"]
    clock.advance(50)
    response = timed.client.post(f"/v1/leases/{lease['id']}/heartbeat", headers=timed.as_("writer"))
    assert response.status_code == 200
    assert datetime.fromisoformat(response.json()["expires_at"]) == clock.now + timedelta(
        seconds=60
    )


def test_an_expired_lease_is_lost(timed: Api, clock: Clock) -> None:
    """After its expiry, neither heartbeat nor completion is accepted: 409 lease_lost."""
    timed.create_item(as_="writer")
    lease = timed.claim("writer", "research")["lease"]["id"]
    clock.advance(61)
    for action in ("heartbeat", "complete"):
        response = timed.client.post(
            f"/v1/leases/{lease}/{action}", json={}, headers=timed.as_("writer")
        )
        assert response.status_code == 409
        assert response.json()["code"] == "lease_lost"


def test_a_retryable_failure_is_retried_after_backoff(timed: Api, clock: Clock) -> None:
    """A retryable failure makes the stage ready again, not before its backoff has passed."""
    item = timed.create_item(as_="writer")
    lease = timed.claim("writer", "research")["lease"]["id"]
    failed = timed.client.post(
        f"/v1/leases/{lease}/fail",
        json={"error": "rate limited", "retryable": True},
        headers=timed.as_("writer"),
    )
    assert failed.status_code == 200
    timed.settle()
    now = timed.item(item["id"])
    assert (now["status"], now["attempt"]) == ("ready", 2)
    assert datetime.fromisoformat(now["not_before"]) > clock.now
    early = timed.client.post("/v1/claims", json={"stage": "research"}, headers=timed.as_("writer"))
    assert early.status_code == 204
    clock.advance(11)
    second = timed.claim("writer", "research")
    assert second["lease"]["attempt"] == 2


def test_exhausted_retries_park_the_item_and_an_operator_can_retry_it(
    timed: Api, clock: Clock
) -> None:
    """Two failed attempts park the item; an operator's retry makes it ready with attempts reset."""
    item = timed.create_item(as_="writer")
    for _ in range(2):
        lease = timed.claim("writer", "research")["lease"]["id"]
        timed.client.post(
            f"/v1/leases/{lease}/fail", json={"error": "boom"}, headers=timed.as_("writer")
        )
        timed.settle()
        clock.advance(30)
    parked = timed.item(item["id"])
    assert parked["status"] == "parked"
    history = timed.events(item["id"])
    assert history[-1]["type"] == "ItemParked"
    assert history[-1]["data"]["reason"] == "retries_exhausted"

    response = timed.client.post(f"/v1/items/{item['id']}/retry", headers=timed.admin)
    assert response.status_code == 200
    assert (response.json()["item"]["status"], response.json()["item"]["attempt"]) == ("ready", 1)
    assert timed.claim("writer", "research")["lease"]["attempt"] == 1


def test_a_non_retryable_failure_parks_at_once(timed: Api) -> None:
    """retryable: false parks the item on the first failure, with reason failed."""
    item = timed.create_item(as_="writer")
    lease = timed.claim("writer", "research")["lease"]["id"]
    timed.client.post(
        f"/v1/leases/{lease}/fail",
        json={"error": "bad input", "retryable": False},
        headers=timed.as_("writer"),
    )
    timed.settle()
    assert timed.item(item["id"])["status"] == "parked"
    assert timed.events(item["id"])[-1]["data"]["reason"] == "failed"


def test_a_cancelled_item_cannot_be_completed(timed: Api) -> None:
    """Cancelling a claimed item loses the lease; a cancelled item cannot be cancelled again."""
    item = timed.create_item(as_="writer")
    lease = timed.claim("writer", "research")["lease"]["id"]
    assert (
        timed.client.post(f"/v1/items/{item['id']}/cancel", headers=timed.admin).status_code == 200
    )
    response = timed.client.post(
        f"/v1/leases/{lease}/complete", json={}, headers=timed.as_("writer")
    )
    assert response.json()["code"] == "lease_lost"
    again = timed.client.post(f"/v1/items/{item['id']}/cancel", headers=timed.admin)
    assert again.status_code == 409
    timed.settle()
    assert timed.item(item["id"])["status"] == "cancelled"
