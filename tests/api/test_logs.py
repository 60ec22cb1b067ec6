"""The logs of a real `stateowner serve`: one canonical JSON line per request, and never a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveService

pytestmark = pytest.mark.api


@pytest.fixture
def live(clean_database: str, tmp_path: Path) -> Iterator[LiveService]:
    service = LiveService(clean_database, tmp_path, {"STATEOWNER_LOG_LEVEL": "info"})
    service.serve()
    try:
        yield service
    finally:
        service.stop_all()


def test_tokens_never_reach_the_logs(live: LiveService) -> None:
    """Tokens shown at registration and rotation, and sent back as credentials, are never logged."""
    secrets: list[str] = []
    with live.client() as admin:
        admin.put("/v1/pipelines/p", json={"stages": [{"name": "work"}]})
        created = admin.post(
            "/v1/agents", json={"name": "bot", "role": "agent", "stages": ["work"]}
        ).json()
        rotated = admin.post("/v1/agents/bot/rotate").json()
        secrets += [created["token"], rotated["token"]]
    with live.client(rotated["token"]) as bot:
        bot.post("/v1/items", json={"pipeline": "p", "topic": "t", "title": "x"})
        bot.post("/v1/claims", json={"stage": "work"})
        bot.post("/v1/items", content=b"{not json", headers={"content-type": "application/json"})
    with live.client(created["token"]) as stale:
        assert stale.get("/v1/items").status_code == 401
    live.stop_all()
    log = (live.workdir / "serve.log").read_text()
    for token in secrets:
        assert token.split("_", 2)[2] not in log
    requests = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and '"request"' in line
    ]
    assert len(requests) >= 7
    claim = next(r for r in requests if r["path"] == "/v1/claims")
    assert claim["principal"] == "agent:bot"
    assert claim["status"] == 200
    assert claim["item_id"]
    assert all({"request_id", "status", "duration_ms", "principal"} <= r.keys() for r in requests)
