"""The benchmark's bulk seeding path (bench/seed.py) writes a log the service cannot tell from
one it appended itself: the chain verifies, the views equal a replay, and the API reads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bench.seed import seed
from projections import maintenance
from tests.live import LiveService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STATEOWNER = Path(sys.executable).with_name("stateowner")


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATEOWNER_DATABASE_URL": database_url, "STATEOWNER_LOG_LEVEL": "warning"}
    return subprocess.run(
        [str(STATEOWNER), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_seeded_log_verifies_and_the_api_reads_it(clean_database: str, tmp_path: Path) -> None:
    """Two seedings of about 1k events each (the second after the first's head): gap-free
    positions and versions, an intact chain, views identical to a replay, the bus at the head,
    and items, histories and listings served from it."""
    first = seed(clean_database, 1000, random_seed=1)
    second = seed(clean_database, 1000, random_seed=2)
    assert first.events >= 1000
    assert second.head >= first.head + second.events

    with psycopg.connect(clean_database) as conn:
        count, head = conn.execute(
            "SELECT count(*), max(notification_id) FROM stateowner_events"
        ).fetchone()  # type: ignore[misc]
        assert count == head == second.head
        gaps = conn.execute(
            "SELECT count(*) FROM (SELECT originator_id, max(originator_version) AS top, "
            "count(*) AS n FROM stateowner_events GROUP BY originator_id) v WHERE top <> n"
        ).fetchone()
        assert gaps == (0,)
        bus = conn.execute("SELECT max(notification_id) FROM stateowner_tracking").fetchone()
        assert bus == (head,)
        statuses = dict(
            conn.execute("SELECT status, count(*) FROM item_status GROUP BY status").fetchall()
        )
    assert {"done", "ready", "claimed"} <= set(statuses)

    chain = cli(clean_database, "log", "verify")
    assert chain.returncode == 0, chain.stderr
    assert f"up to {second.head}" in chain.stdout
    views = cli(clean_database, "projections", "verify")
    assert views.returncode == 0, views.stdout + views.stderr
    assert views.stdout.count("identical to a replay") == len(maintenance.VIEWS)

    service = LiveService(clean_database, tmp_path)
    service.serve()
    try:
        with service.client() as admin:
            listing = admin.get(
                "/v1/items", params={"stage": "review", "status": "done", "limit": 5}
            )
            assert listing.status_code == 200
            page = listing.json()["items"]
            assert page
            assert all(i["stage"] == "review" and i["status"] == "done" for i in page)
            later = admin.get(
                "/v1/items",
                params={
                    "stage": "review",
                    "status": "done",
                    "cursor": listing.json()["next_cursor"],
                },
            )
            assert later.status_code == 200
            item = admin.get(f"/v1/items/{page[0]['id']}").json()
            assert item["status"] == "done"
            history = admin.get(f"/v1/items/{item['id']}/events").json()["events"]
            assert [e["version"] for e in history] == list(range(1, item["version"] + 1))
            assert history[0]["type"] == "ItemCreated"
            assert history[-1]["type"] == "ItemCompleted"
    finally:
        service.stop_all()
