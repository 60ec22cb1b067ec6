"""The example fleet (examples/newsroom) as its README runs it, with the server killed (SIGKILL)
mid-run and started again: every item still reaches done, and every lease ended exactly once —
no report applied twice, none left hanging."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stateowner_client import Client, Event, StateownerError
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveService, check_invariants
from tests.sdk.conftest import fresh_database, unique, wait_for

pytestmark = [pytest.mark.sdk, pytest.mark.integration, pytest.mark.slow]

FLEET = Path(__file__).resolve().parents[2] / "examples" / "newsroom" / "fleet.py"
LEASE_ENDS = {"StageCompleted", "StageFailed", "LeaseExpired"}


@pytest.fixture
def service(server_conninfo: str, tmp_path: Path) -> Iterator[LiveService]:
    url, drop = fresh_database(server_conninfo)
    live = LiveService(url, tmp_path, {"STATEOWNER_SWEEP_INTERVAL_SECONDS": "0.2"})
    try:
        yield live
    finally:
        live.stop_all()
        drop()


def _done(admin: Client, topic: str) -> int:
    try:
        return sum(item.status == "done" for item in admin.list_items(topic=topic))
    except StateownerError:
        return 0  # the server is down or starting


def check_leases(events: list[Event]) -> None:
    """Each claimed lease ended once: one completion, failure or expiry, never two reports."""
    claimed = [e.data["lease_id"] for e in events if e.type == "StageClaimed"]
    ended = Counter(e.data["lease_id"] for e in events if e.type in LEASE_ENDS)
    assert len(claimed) == len(set(claimed))
    assert set(ended) == set(claimed), (claimed, ended)
    assert all(count == 1 for count in ended.values()), ended


def test_the_fleet_drives_every_item_to_done_across_a_kill_9_of_the_server(
    service: LiveService, tmp_path: Path
) -> None:
    """Twelve items, four agents; SIGKILL the only server once a third are done, restart it on the
    same database; the fleet finishes by itself and every history is exact."""
    server = service.serve()
    topic = unique("newsroom")
    log = tmp_path / "fleet.log"
    with log.open("w") as out:
        fleet = subprocess.Popen(
            [sys.executable, str(FLEET), "--items", "12", "--base-url", service.base,
             "--topic", topic, "--speed", "0.3", "--lease-seconds", "10", "--timeout", "240"],
            env={**os.environ, "STATEOWNER_ADMIN_TOKEN": ADMIN_TOKEN},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with Client(service.base, ADMIN_TOKEN) as admin:
            wait_for("four items done", lambda: _done(admin, topic) >= 4, timeout=120)
            server.kill()
            time.sleep(1.0)
            service.serve()
            returncode = fleet.wait(timeout=240)
            output = log.read_text()
            assert returncode == 0, output[-4000:]
            assert "the service is not answering" in output, "the kill was felt by the fleet"
            items = list(admin.list_items(topic=topic))
            assert len(items) == 12
            assert {item.status for item in items} == {"done"}
            for item in items:
                events = list(admin.item_events(item.id))
                check_invariants([dict(event.raw) for event in events])
                check_leases(events)
            assert any(
                event.type == "ItemParked" and event.data["reason"] == "loop_guard"
                for item in items
                for event in admin.item_events(item.id)
            ), "the stubborn subject met the loop guard"
    finally:
        if fleet.poll() is None:
            fleet.kill()
