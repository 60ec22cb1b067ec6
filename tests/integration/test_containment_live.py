"""Containment across processes: agents claim through two `stateowner serve` processes on one
database at once, and a stage's cap (and an agent's) still holds; the report counts the work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveService

pytestmark = pytest.mark.integration

SPEC = {"stages": [{"name": "work", "max_concurrent": 2}], "exit_criteria": {"items_per_day": 1}}


@pytest.fixture
def services(clean_database: str, tmp_path: Path) -> Iterator[list[LiveService]]:
    pair = [LiveService(clean_database, tmp_path / name) for name in ("a", "b")]
    for service in pair:
        service.workdir.mkdir()
    try:
        yield pair
    finally:
        for service in pair:
            service.stop_all()


@pytest.mark.timeout(300)
def test_a_stage_cap_holds_for_claims_through_two_servers_at_once(
    services: list[LiveService],
) -> None:
    """Six agents claim at once, three through each server, with two leases allowed at `work`:
    two get one, four wait and get 204; the report shows the items."""
    for service in services:
        service.serve()
    first = services[0]
    with first.client() as admin:
        assert admin.put("/v1/pipelines/capped", json=SPEC).status_code == 200
        tokens = []
        for n in range(6):
            body = {"name": f"agent-{n}", "role": "agent", "stages": ["work"]}
            tokens.append(admin.post("/v1/agents", json=body).json()["token"])
        for n in range(6):
            item = {"pipeline": "capped", "topic": "load", "title": f"#{n}"}
            assert admin.post("/v1/items", json=item).status_code == 201
    statuses: list[int] = []
    start = threading.Barrier(6)

    def claim(token: str, service: LiveService) -> None:
        with service.client(token) as client:
            start.wait()
            response = client.post("/v1/claims", json={"stage": "work", "wait_seconds": 2})
            statuses.append(response.status_code)

    threads = [
        threading.Thread(target=claim, args=(token, services[n % 2]))
        for n, token in enumerate(tokens)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200, 200, 204, 204, 204, 204]
    with services[1].client() as admin:
        claimed = admin.get("/v1/items", params={"status": "claimed"}).json()["items"]
        assert len(claimed) == 2
        report = admin.get("/v1/pipelines/capped/report", params={"days": 1}).json()
    assert report["items"] == 6
    assert report["criteria"] == [
        {"name": "items_per_day", "target": 1.0, "actual": report["items_per_day"], "met": True}
    ]
