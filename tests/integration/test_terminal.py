"""`stateowner items …` and `stateowner tail` as real processes: the same views from a remote
server (--url, --token) and from the local database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.helpers import ARTICLE_SPEC
from tests.live import LiveService, own_service

pytestmark = pytest.mark.integration

STATEOWNER = Path(sys.executable).with_name("stateowner")


@pytest.fixture(scope="module")
def service(
    server_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    with own_service(server_conninfo, Path(tmp_path_factory.mktemp("terminal"))) as live:
        with live.client() as admin:
            admin.put("/v1/pipelines/article", json=ARTICLE_SPEC)
            for title in ("first <b>one</b>", "second"):
                admin.post("/v1/items", json={"pipeline": "article", "topic": "t", "title": title})
        yield live


def run(service: LiveService, *args: str, remote: bool) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STATEOWNER_DATABASE_URL": service.database_url,
        "STATEOWNER_LOG_LEVEL": "warning",
        "COLUMNS": "220",
    }
    env.pop("STATEOWNER_URL", None)
    env.pop("STATEOWNER_TOKEN", None)
    if remote:
        env.update(STATEOWNER_URL=service.base, STATEOWNER_TOKEN=ADMIN_TOKEN)
    return subprocess.run(
        [str(STATEOWNER), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def both(service: LiveService, *args: str) -> str:
    """Run the command remotely and locally; both must succeed with the same output."""
    remote = run(service, *args, remote=True)
    local = run(service, *args, remote=False)
    assert remote.returncode == 0, remote.stderr
    assert local.returncode == 0, local.stderr
    assert remote.stdout == local.stdout
    return remote.stdout


def first_item(service: LiveService) -> str:
    with service.client() as admin:
        item_id: str = admin.get("/v1/items").json()["items"][0]["id"]
    return item_id


def test_items_list_filters_and_shows_a_table(service: LiveService) -> None:
    """`items list` shows every item, and a filter narrows it, the same remotely and locally."""
    listed = both(service, "items", "list")
    assert "first <b>one</b>" in listed
    assert "second" in listed
    assert "ready" in listed
    assert "no items match" in both(service, "items", "list", "--status", "parked")
    paged = both(service, "items", "list", "--limit", "1")
    assert "next page: --cursor" in paged


def test_items_show_history_and_at(service: LiveService) -> None:
    """`show` is where the item stands, `history` every event with its actor, `at 1` the item
    as its first event left it."""
    item_id = first_item(service)
    shown = both(service, "items", "show", item_id)
    assert "research" in shown
    history = both(service, "items", "history", item_id)
    assert "ItemCreated" in history
    assert "StageReady" in history
    assert "admin:builtin" in history
    at_first = both(service, "items", "at", item_id, "1")
    assert "at version 1" in at_first


def test_refusals_are_messages_with_a_status(service: LiveService) -> None:
    """An unknown item is a message and exit 1; --url without a token is exit 2."""
    for remote in (True, False):
        missing = run(
            service, "items", "show", "00000000-0000-0000-0000-000000000000", remote=remote
        )
        assert missing.returncode == 1
        assert "refused" in missing.stderr
    no_token = run(service, "items", "list", "--url", service.base, remote=False)
    assert no_token.returncode == 2


def test_tail_follows_the_log_remotely_and_locally(service: LiveService) -> None:
    """`tail --after 0 --count N --json` prints the log's first events, the same both ways; a
    type filter keeps only that type."""
    lines = both(service, "tail", "--after", "0", "--count", "4", "--json").splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["position"] for e in events] == [1, 2, 3, 4]
    created = both(
        service, "tail", "--after", "0", "--count", "2", "--type", "ItemCreated", "--json"
    )
    assert {json.loads(line)["type"] for line in created.splitlines()} == {"ItemCreated"}
    table = both(service, "tail", "--after", "0", "--count", "1")
    assert "PipelineDefined" in table
