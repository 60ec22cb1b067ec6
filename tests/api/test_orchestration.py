"""Completion triggers with guards: loops park, expired leases retry, claims never share a lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.container import Container
from api.settings import Settings
from tests.api.test_leases import Clock
from tests.helpers import Api
from tests.live import LiveService

pytestmark = pytest.mark.api

LOOPING_SPEC = {
    "stages": [
        {"name": "draft", "lease_seconds": 60, "max_attempts": 2, "retry_backoff_seconds": 5},
        {"name": "edit", "on": {"revise": "draft"}},
    ],
    "max_visits_per_stage": 2,
    "max_transitions": 10,
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def loop_api(settings: Settings, clock: Clock) -> Iterator[Api]:
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        api = Api(client)
        api.put_pipeline("loop", LOOPING_SPEC)
        api.add_agent("writer", stages=["draft"])
        api.add_agent("editor", stages=["edit"])
        yield api


def _container(api: Api) -> Container:
    container: Container = api.client.app.state.container
    return container


def _work(api: Api, agent: str, stage: str, **report: Any) -> None:
    lease = api.claim(agent, stage)["lease"]["id"]
    api.complete(agent, lease, **report)


def test_a_revise_loop_is_parked_by_the_loop_guard_with_its_path(loop_api: Api) -> None:
    """Draft may be visited twice; the editor's second revise would make a third visit: parked."""
    item = loop_api.create_item(pipeline="loop")
    _work(loop_api, "writer", "draft")
    _work(loop_api, "editor", "edit", outcome="revise")
    _work(loop_api, "writer", "draft")
    _work(loop_api, "editor", "edit", outcome="revise")
    loop_api.settle()
    parked = loop_api.item(item["id"])
    assert parked["status"] == "parked"
    assert parked["visits"] == {"draft": 2, "edit": 2}
    last = loop_api.events(item["id"])[-1]
    assert last["type"] == "ItemParked"
    assert last["data"]["reason"] == "loop_guard"
    assert "draft -> edit -> draft -> edit -> draft" in last["data"]["detail"]


def test_max_transitions_parks_a_long_walk(settings: Settings, clock: Clock) -> None:
    """With max_transitions 2, the third move parks the item even though no stage loops."""
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        api = Api(client)
        stages = [{"name": name} for name in ("a", "b", "c", "d")]
        api.put_pipeline("walk", {"stages": stages, "max_transitions": 2})
        api.add_agent("bot", stages=["a", "b", "c", "d"])
        item = api.create_item(pipeline="walk")
        for stage in ("a", "b", "c"):
            _work(api, "bot", stage)
        api.settle()
        last = api.events(item["id"])[-1]
        assert (last["type"], last["data"]["reason"]) == ("ItemParked", "loop_guard")
        assert "max_transitions 2" in last["data"]["detail"]


def test_an_expired_lease_is_swept_and_the_stage_retried(loop_api: Api, clock: Clock) -> None:
    """Past its lease the claim is swept (LeaseExpired), the stage is retried, the old lease is lost."""
    item = loop_api.create_item(pipeline="loop")
    stale = loop_api.claim("writer", "draft")["lease"]["id"]
    clock.advance(61)
    _container(loop_api).sweeper.sweep_now()
    deadline = time.monotonic() + 10
    while loop_api.item(item["id"], min_position=loop_api.settle())["status"] != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    types = [e["type"] for e in loop_api.events(item["id"])]
    assert types[-2:] == ["LeaseExpired", "StageReady"]
    late = loop_api.client.post(
        f"/v1/leases/{stale}/complete", json={}, headers=loop_api.as_("writer")
    )
    assert late.status_code == 409
    assert late.json()["code"] == "lease_lost"
    clock.advance(6)
    assert loop_api.claim("writer", "draft")["lease"]["attempt"] == 2


def test_a_waiting_claim_is_woken_by_the_ready_signal(loop_api: Api) -> None:
    """A claim waiting on edit returns the item the bus makes ready there, signalled by NOTIFY."""
    container = _container(loop_api)
    item = loop_api.create_item(pipeline="loop")
    seen = container.ready.generation("edit")
    result: dict[str, Any] = {}

    def wait_for_edit() -> None:
        result["claim"] = loop_api.claim("editor", "edit", wait_seconds=20)

    waiter = threading.Thread(target=wait_for_edit)
    waiter.start()
    _work(loop_api, "writer", "draft")
    waiter.join(25)
    assert result["claim"]["item"]["id"] == item["id"]
    assert container.ready.generation("edit") > seen


@pytest.fixture
def live(clean_database: str, tmp_path: Path) -> Iterator[LiveService]:
    service = LiveService(clean_database, tmp_path)
    service.serve()
    try:
        yield service
    finally:
        service.stop_all()


def test_sixteen_agents_claiming_one_stage_at_once_never_share_a_lease(live: LiveService) -> None:
    """Sixteen simultaneous long-polling claims on twelve ready items: twelve leases, all distinct."""
    with live.client() as admin:
        admin.put("/v1/pipelines/p", json={"stages": [{"name": "s"}]})
        tokens = [
            admin.post(
                "/v1/agents", json={"name": f"a{n}", "role": "agent", "stages": ["s"]}
            ).json()["token"]
            for n in range(16)
        ]
        for n in range(12):
            admin.post("/v1/items", json={"pipeline": "p", "topic": "t", "title": str(n)})
    barrier = threading.Barrier(16)
    answers: list[httpx.Response] = []

    def claim(token: str) -> None:
        with live.client(token) as client:
            barrier.wait()
            answers.append(client.post("/v1/claims", json={"stage": "s", "wait_seconds": 2}))

    threads = [threading.Thread(target=claim, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    claimed = [a.json() for a in answers if a.status_code == 200]
    assert len(answers) == 16
    assert len(claimed) == 12
    assert sorted(a.status_code for a in answers).count(204) == 4
    assert len({c["lease"]["id"] for c in claimed}) == 12
    assert len({c["item"]["id"] for c in claimed}) == 12
