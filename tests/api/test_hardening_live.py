"""A real `stateowner serve`, tried over raw sockets and many waiting clients: waiting claims
cost no thread, a bad request leaves the connection usable, and stalled clients are cut off."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import LiveService, own_service

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def live(server_conninfo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """One server for the module, with few request threads, small caps and short timeouts."""
    with own_service(
        server_conninfo,
        Path(tmp_path_factory.mktemp("hardening")),
        STATEOWNER_WORKER_THREADS="8",
        STATEOWNER_MAX_WAITING_CLAIMS_PER_AGENT="30",
        STATEOWNER_HEADER_TIMEOUT_SECONDS="0.5",
        STATEOWNER_BODY_TIMEOUT_SECONDS="0.5",
    ) as service:
        with service.client() as admin:
            admin.put("/v1/pipelines/p", json={"stages": [{"name": "work"}]}).raise_for_status()
        yield service


def _agent(live: LiveService, name: str, stage: str) -> str:
    with live.client() as admin:
        response = admin.post("/v1/agents", json={"name": name, "role": "agent", "stages": [stage]})
        response.raise_for_status()
        token: str = response.json()["token"]
        return token


def _waiting(live: LiveService) -> int:
    with live.client() as admin:
        return int(admin.get("/v1/health").json()["claims_waiting"])


def _until(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


class Waiters:
    """Claims waiting in threads, each on its own connection."""

    def __init__(self, live: LiveService, token: str, stage: str, count: int, wait: float) -> None:
        self.results: list[httpx.Response] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._claim, args=(live, token, stage, wait))
            for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _claim(self, live: LiveService, token: str, stage: str, wait: float) -> None:
        with live.client(token) as client:
            response = client.post("/v1/claims", json={"stage": stage, "wait_seconds": wait})
        with self._lock:
            self.results.append(response)

    def join(self) -> list[int]:
        for thread in self.threads:
            thread.join()
        return sorted(r.status_code for r in self.results)


def test_waiting_claims_hold_no_thread(live: LiveService) -> None:
    """With 8 request threads and 25 claims waiting, every other request is still answered at
    once (each client gives up after 5 s; the claims wait 8 s)."""
    token = _agent(live, "idle", "idle")
    waiters = Waiters(live, token, "idle", 25, wait=8)
    _until(lambda: _waiting(live) == 25)
    with live.client() as admin:
        admin.timeout = httpx.Timeout(5)
        assert admin.get("/healthz").status_code == 200
        assert admin.get("/v1/items").status_code == 200
        assert admin.get("/metrics").status_code == 200
        assert admin.put("/v1/topics/busy", json={"owner": "ops"}).status_code == 200
    assert waiters.join() == [204] * 25


def test_one_ready_item_wakes_one_waiter(live: LiveService) -> None:
    """Five claims wait; one item made ready goes to exactly one of them, at once, and the
    other four keep waiting until their time is up."""
    token = _agent(live, "waiter", "work")
    waiters = Waiters(live, token, "work", 5, wait=6)
    _until(lambda: _waiting(live) == 5)
    with live.client() as admin:
        admin.post("/v1/items", json={"pipeline": "p", "topic": "t", "title": "x"})
    _until(lambda: len(waiters.results) == 1)
    assert waiters.results[0].status_code == 200
    assert _waiting(live) == 4
    assert waiters.join() == [200, 204, 204, 204, 204]


def test_claims_past_the_cap_are_told_to_come_back(live: LiveService) -> None:
    """An agent's claims past its waiting cap get 429 with Retry-After, as a problem, counted."""
    token = _agent(live, "greedy", "greedy")
    waiters = Waiters(live, token, "greedy", 30, wait=4)
    _until(lambda: _waiting(live) == 30)
    with live.client(token) as client:
        refused = client.post("/v1/claims", json={"stage": "greedy", "wait_seconds": 4})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "too_many_requests"
    metrics = httpx.get(f"{live.base}/metrics").text
    assert 'stateowner_claims_total{result="too_many_waiting",stage="greedy"} 1.0' in metrics
    assert waiters.join() == [204] * 30


# -- raw sockets -----------------------------------------------------------------------------


def _connect(live: LiveService) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    return sock


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request on a kept-alive connection and read its whole response."""
    sock.sendall(request)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _request(method: str, path: str, body: bytes = b"", token: str = "") -> bytes:
    from tests.live import ADMIN_TOKEN

    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token or ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_a_refused_body_leaves_the_connection_usable(live: LiveService) -> None:
    """A lone surrogate in an item's input is a 422, and the same connection answers the next
    request."""
    bad = json.dumps(
        {"pipeline": "p", "topic": "t", "title": "x", "input": {"k": "\ud800"}}
    ).encode()
    with _connect(live) as sock:
        status, headers, body = _exchange(sock, _request("POST", "/v1/items", bad))
        assert status == 422
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["errors"][0]["location"] == "body.input.k"
        status, _, _ = _exchange(sock, _request("GET", "/v1/items"))
        assert status == 200


def test_a_connection_that_sends_nothing_is_closed(live: LiveService) -> None:
    """A client that connects and sends nothing, or half a request head, is cut off."""
    for prefix in (b"", b"GET /healthz HTTP/1.1\r\nHost: te"):
        with _connect(live) as sock:
            sock.sendall(prefix)
            assert sock.recv(1024) == b""  # closed by the server well before our 10 s timeout


def test_a_body_that_stops_arriving_is_a_408(live: LiveService) -> None:
    """A request whose body stalls halfway gets 408 request_timeout."""
    with _connect(live) as sock:
        sock.sendall(_request("POST", "/v1/items", b"x" * 100)[:-90])
        status, _, body = _exchange(sock, b"")
        assert status == 408
        assert json.loads(body)["code"] == "request_timeout"


def test_stopping_the_server_answers_waiting_claims_at_once(
    clean_database: str, tmp_path: Path
) -> None:
    """SIGTERM with claims waiting 30 s: they are answered 204 at once and the server exits,
    instead of holding the shutdown for their whole long poll."""
    service = LiveService(clean_database, tmp_path)
    process = service.serve()
    try:
        with service.client() as admin:
            admin.put("/v1/pipelines/p", json={"stages": [{"name": "work"}]})
        token = _agent(service, "sleepy", "work")
        waiters = Waiters(service, token, "work", 5, wait=30)
        _until(lambda: _waiting(service) == 5)
        assert process.process is not None
        process.process.terminate()
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert process.process.wait(timeout=15) in (0, -signal.SIGTERM)
        assert waiters.join() == [204] * 5
    finally:
        service.stop_all()
