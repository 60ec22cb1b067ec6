"""Real processes for the tests that need them: `stateowner serve` and `worker`, agents on threads,
and the invariants every item's history must keep."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.chaos import violations_of
from tests.conftest import ADMIN_TOKEN

STATEOWNER = Path(sys.executable).with_name("stateowner")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """A stateowner command running as its own OS process."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(STATEOWNER), *self.args], env=self.env, stdout=log, stderr=log
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class LiveService:
    database_url: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    processes: list[Process] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STATEOWNER_DATABASE_URL": self.database_url,
            "STATEOWNER_ADMIN_TOKEN": ADMIN_TOKEN,
            "STATEOWNER_DATA_DIR": str(self.workdir),
            "STATEOWNER_LOG_LEVEL": "warning",
            **self.extra_env,
        }

    def serve(self, **env: str) -> Process:
        process = Process(
            ["serve", "--port", str(self.port)], {**self.env, **env}, self.workdir / "serve.log"
        )
        process.start()
        self.processes.append(process)
        self.wait_ready()
        return process

    def worker(self, *flags: str) -> Process:
        process = Process(["worker", *flags], self.env, self.workdir / "worker.log")
        process.start()
        self.processes.append(process)
        return process

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (self.workdir / "serve.log").read_text()[-3000:]
            time.sleep(0.05)

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=40
        )


@contextmanager
def own_service(server_conninfo: str, workdir: Path, **env: str) -> Iterator[LiveService]:
    """A `stateowner serve` on a database of its own (dropped afterwards), for a module whose
    tests share one server."""
    name = f"stateowner_live_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    service = LiveService(make_conninfo(server_conninfo, dbname=name), workdir, extra_env=env)
    try:
        service.serve()
        yield service
    finally:
        service.stop_all()
        with psycopg.connect(server_conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class AgentLoop(threading.Thread):
    """An agent that claims and completes its stage until told to stop, riding out restarts."""

    def __init__(self, service: LiveService, token: str, stage: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.token = token
        self.stage = stage
        self.halt = stop
        self.completed = 0
        self.transport_errors = 0

    def run(self) -> None:
        with self.service.client(self.token) as client:
            while not self.halt.is_set():
                try:
                    response = client.post(
                        "/v1/claims", json={"stage": self.stage, "wait_seconds": 1}
                    )
                except httpx.TransportError:
                    self.transport_errors += 1
                    time.sleep(0.1)
                    continue
                if response.status_code != 200:
                    continue
                lease = response.json()["lease"]["id"]
                self._complete(client, lease)

    def _complete(self, client: httpx.Client, lease: str) -> None:
        report = {"output": {"by": self.stage}, "cost_usd": 0.01, "tokens_in": 10, "tokens_out": 5}
        for _ in range(200):
            try:
                response = client.post(f"/v1/leases/{lease}/complete", json=report)
            except httpx.TransportError:
                self.transport_errors += 1
                time.sleep(0.1)
                continue  # the same report again: answered again if it had landed
            if response.status_code == 200:
                self.completed += 1
            return


def history(client: httpx.Client, item_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/items/{item_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def check_invariants(events: list[dict[str, Any]]) -> None:
    """One decision per trigger, each naming its trigger; one ItemCompleted; nothing after it;
    every lease ended once (the chaos run's checks, without its acknowledged writes)."""
    found = violations_of(events, acked={})
    assert not found, found
