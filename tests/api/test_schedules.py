"""Schedules through HTTP: one item per tick, created by the scheduler exactly once; bad input
named; the authorization matrix covers who may manage them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import Api

pytestmark = pytest.mark.api

EVERY_SECOND = {
    "pipeline": "article",
    "topic": "daily",
    "title": "Digest {tick}",
    "every_seconds": 1,
}


def _fired(api: Api) -> list[dict[str, Any]]:
    events = api.client.get("/v1/events", params={"limit": 1000}, headers=api.admin).json()
    return [e for e in events["events"] if e["type"] == "ScheduleFired"]


def _wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_schedule_creates_one_item_per_tick(api: Api) -> None:
    """An operator puts a schedule every second; items arrive, one per tick, each recorded."""
    api.put_pipeline()
    response = api.client.put("/v1/schedules/digest", json=EVERY_SECOND, headers=api.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["every_seconds"], body["catch_up"]) == (1, "skip")
    assert body["next_tick"] is not None
    _wait_for(lambda: len(_fired(api)) >= 3)
    fired = _fired(api)
    ticks = [e["data"]["tick"] for e in fired]
    assert len(ticks) == len(set(ticks))
    for event in fired:
        assert (
            api.item(event["data"]["item_id"], min_position=event["position"])["topic"] == "daily"
        )
    first = api.item(fired[0]["data"]["item_id"], min_position=fired[0]["position"])
    assert first["title"] == f"Digest {ticks[0]}"
    assert (first["status"], first["stage"]) == ("ready", "research")
    listed = api.client.get("/v1/schedules", headers=api.admin).json()["schedules"]
    assert [s["name"] for s in listed] == ["digest"]
    assert listed[0]["fired"] >= 1

    assert api.client.delete("/v1/schedules/digest", headers=api.admin).status_code == 204
    count = len(_fired(api))
    time.sleep(1.5)
    assert len(_fired(api)) == count
    assert api.client.get("/v1/schedules", headers=api.admin).json()["schedules"] == []
    assert api.client.delete("/v1/schedules/digest", headers=api.admin).status_code == 404


def test_a_disabled_schedule_fires_nothing(api: Api) -> None:
    """A schedule put with enabled false is listed without a next tick and creates nothing."""
    api.put_pipeline()
    body = {**EVERY_SECOND, "enabled": False}
    response = api.client.put("/v1/schedules/quiet", json=body, headers=api.admin)
    assert response.status_code == 200, response.text
    assert response.json()["next_tick"] is None
    time.sleep(1.5)
    assert _fired(api) == []


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"cron": "61 * * * *", "every_seconds": None}, 422, "cron"),
        ({"cron": "not a cron", "every_seconds": None}, 422, "cron"),
        ({"cron": "* * * * *"}, 422, "cron"),
        ({"every_seconds": None}, 422, "cron"),
        ({"every_seconds": 0}, 422, "every_seconds"),
        ({"timezone": "Mars/Olympus"}, 422, "timezone"),
        ({"catch_up": "all"}, 422, "catch_up"),
        ({"pipeline": "nowhere"}, 404, "pipeline"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    api: Api, change: dict[str, Any], status: int, field: str
) -> None:
    """A bad cron, period, zone or catch-up, or an unknown pipeline: refused, naming it."""
    api.put_pipeline()
    response = api.client.put(
        "/v1/schedules/bad", json={**EVERY_SECOND, **change}, headers=api.admin
    )
    assert response.status_code == status, response.text
    problem = response.json()
    assert field in problem["detail"]
    assert api.client.get("/v1/schedules", headers=api.admin).json()["schedules"] == []


def test_a_cron_schedule_in_a_time_zone_shows_its_next_tick(api: Api) -> None:
    """A daily cron in Europe/Paris: the next tick is 09:00 there."""
    api.put_pipeline()
    body = {**EVERY_SECOND, "every_seconds": None, "cron": "0 9 * * *", "timezone": "Europe/Paris"}
    response = api.client.put("/v1/schedules/morning", json=body, headers=api.admin)
    assert response.status_code == 200, response.text
    next_tick = response.json()["next_tick"]
    from datetime import datetime
    from zoneinfo import ZoneInfo

    local = datetime.fromisoformat(next_tick).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute, local.second) == (9, 0, 0)
