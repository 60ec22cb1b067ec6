"""The `stateowner` command line, run as a real process against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.live import LiveService

pytestmark = pytest.mark.integration

STATEOWNER = Path(sys.executable).with_name("stateowner")


def run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATEOWNER_DATABASE_URL": database_url, "STATEOWNER_LOG_LEVEL": "warning"}
    return subprocess.run(
        [str(STATEOWNER), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_pipelines_apply_reads_json_and_toml(clean_database: str, tmp_path: Path) -> None:
    """A JSON file defines version 1, a TOML file revises it to version 2; a bad spec is refused."""
    spec = tmp_path / "article.json"
    spec.write_text(json.dumps({"stages": [{"name": "draft"}, {"name": "edit"}]}))
    first = run(clean_database, "pipelines", "apply", str(spec))
    assert first.returncode == 0, first.stderr
    assert "pipeline article is at version 1" in first.stdout
    toml = tmp_path / "article.toml"
    toml.write_text(
        'max_transitions = 10\n[[stages]]\nname = "draft"\n[[stages]]\nname = "publish"\n'
    )
    second = run(clean_database, "pipelines", "apply", str(toml))
    assert "version 2" in second.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stages": [{"name": "a", "on": {"x": "nowhere"}}]}))
    refused = run(clean_database, "pipelines", "apply", str(bad))
    assert refused.returncode == 1
    assert "unknown stage 'nowhere'" in refused.stderr


def test_agents_add_prints_a_token_that_works(clean_database: str, tmp_path: Path) -> None:
    """The printed token authenticates its agent over HTTP; a second add of the name is refused."""
    added = run(clean_database, "agents", "add", "writer", "--role", "agent", "--stage", "draft")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("so_")
    again = run(clean_database, "agents", "add", "writer")
    assert again.returncode == 1
    service = LiveService(clean_database, tmp_path)
    service.serve()
    try:
        response = httpx.get(
            f"{service.base}/v1/items", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
    finally:
        service.stop_all()


def test_projections_status_rebuild_and_verify(clean_database: str, tmp_path: Path) -> None:
    """verify passes on honest tables, fails (exit 1) naming a row edited by hand, and a rebuild
    repairs it; status shows every projection and the bus."""
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps({"stages": [{"name": "draft"}]}))
    run(clean_database, "pipelines", "apply", str(spec))
    run(clean_database, "agents", "add", "bot", "--stage", "draft")
    service = LiveService(clean_database, tmp_path)
    service.serve()
    try:
        with service.client() as admin:
            item = admin.post(
                "/v1/items", json={"pipeline": "p", "topic": "t", "title": "x"}
            ).json()
            head = item["position"]
            admin.get(f"/v1/items/{item['id']}", params={"min_position": head})
    finally:
        service.stop_all()

    status = run(clean_database, "projections", "status")
    for name in ("item_status", "topics", "agents", "spend", "budgets", "audit", "bus"):
        assert name in status.stdout
    assert run(clean_database, "projections", "verify").returncode == 0

    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("UPDATE item_status SET title = 'tampered'")
    drift = run(clean_database, "projections", "verify", "item_status")
    assert drift.returncode == 1
    assert "title: live='tampered' rebuilt='x'" in drift.stdout

    rebuilt = run(clean_database, "projections", "rebuild", "item_status")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt item_status" in rebuilt.stdout
    assert run(clean_database, "projections", "verify").returncode == 0
    unknown = run(clean_database, "projections", "verify", "nope")
    assert unknown.returncode == 2
