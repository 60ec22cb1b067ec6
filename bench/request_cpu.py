"""The server's CPU per hot request, and the client's p50, one request at a time.

Run by hand, not in CI:

    .venv/bin/python bench/request_cpu.py                  # embedded PostgreSQL
    .venv/bin/python bench/request_cpu.py --database-url postgresql://postgres@127.0.0.1:5432/
    .venv/bin/python bench/request_cpu.py --rounds 3 -n 300

It starts a real `stateowner serve` on a fresh database (as bench/bench.py does), then, from one
client and one request at a time, runs each kind as a phase of N: creates, claims, heartbeats,
completes, and (on a second batch) claims and fails. Each phase's figure is the server process's
CPU (utime + stime of every thread, from /proc/PID/stat: the projections and bus followers'
work on the events the phase appended included) over the phase and a short settle after it,
less what the idle server burns over the same time, per request. CPU per request hardly moves
with other load on the machine, unlike throughput; the p50 does.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(ROOT))

from bench.bench import ADMIN, client, free_port, fresh_database, served  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_SECONDS = 0.5
KINDS = ("create", "claim", "heartbeat", "complete", "fail")


def cpu_ms(pid: int) -> float:
    """The process's CPU so far, every thread, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS


def idle_rate(pid: int, seconds: float = 2.0) -> float:
    """What the idle server burns (pollers, sweeps), in CPU-ms per second."""
    before, started = cpu_ms(pid), time.perf_counter()
    time.sleep(seconds)
    return (cpu_ms(pid) - before) / (time.perf_counter() - started)


def phase(
    pid: int, idle: float, count: int, send: Callable[[int], httpx.Response]
) -> tuple[float, float]:
    """Send `count` requests one at a time: (server CPU-ms per request, client p50 ms)."""
    latencies = []
    before, started = cpu_ms(pid), time.perf_counter()
    for n in range(count):
        sent = time.perf_counter()
        response = send(n)
        latencies.append((time.perf_counter() - sent) * 1000)
        response.raise_for_status()
    time.sleep(SETTLE_SECONDS)
    spent = cpu_ms(pid) - before - idle * (time.perf_counter() - started)
    return spent / count, statistics.median(latencies)


def one_round(
    base: str, pid: int, count: int, tokens: dict[str, str]
) -> dict[str, tuple[float, float]]:
    figures: dict[str, tuple[float, float]] = {}
    idle = idle_rate(pid)
    print(f"idle server: {idle:.1f} CPU-ms/s", flush=True)
    with client(base, ADMIN) as admin, client(base, tokens["worker"]) as worker:

        def create(n: int) -> httpx.Response:
            return admin.post(
                "/v1/items", json={"pipeline": "cycle", "topic": "t", "title": str(n)}
            )

        def claim(n: int) -> httpx.Response:
            response = worker.post("/v1/claims", json={"stage": "work"})
            if response.status_code != 200:
                raise RuntimeError(f"claim {n}: {response.status_code} {response.text}")
            leases.append(response.json()["lease"]["id"])
            return response

        def heartbeat(n: int) -> httpx.Response:
            return worker.post(f"/v1/leases/{leases[n]}/heartbeat")

        def complete(n: int) -> httpx.Response:
            return worker.post(f"/v1/leases/{leases[n]}/complete", json={"output": {"n": n}})

        def fail(n: int) -> httpx.Response:
            return worker.post(
                f"/v1/leases/{leases[n]}/fail", json={"error": "bench", "retryable": False}
            )

        leases: list[str] = []
        figures["create"] = phase(pid, idle, count, create)
        figures["claim"] = phase(pid, idle, count, claim)
        figures["heartbeat"] = phase(pid, idle, count, heartbeat)
        figures["complete"] = phase(pid, idle, count, complete)
        leases.clear()
        for n in range(count):
            create(n).raise_for_status()
        time.sleep(SETTLE_SECONDS)
        for n in range(count):
            claim(n)
        figures["fail"] = phase(pid, idle, count, fail)
    return figures


def setup(base: str) -> dict[str, str]:
    with client(base, ADMIN) as admin:
        admin.put("/v1/pipelines/cycle", json={"stages": [{"name": "work"}]}).raise_for_status()
        response = admin.post(
            "/v1/agents", json={"name": "worker", "role": "agent", "stages": ["work"]}
        )
        response.raise_for_status()
        return {"worker": response.json()["token"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("STATEOWNER_DATABASE_URL"))
    parser.add_argument("-n", type=int, default=300, help="requests of each kind per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds on the same server")
    parser.add_argument("--warmup", type=int, default=50, help="cycles before the first round")
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="a py-spy binary (installed outside the project) to sample the server over the rounds",
    )
    parser.add_argument("--profile-out", default="request_cpu.folded", help="py-spy's output")
    args = parser.parse_args()
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(args.database_url))
        base, pid = stack.enter_context(served(database_url, free_port()))
        tokens = setup(base)
        if args.warmup:
            one_round(base, pid, args.warmup, tokens)
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(  # noqa: S603
                [
                    args.py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--threads",
                    "--rate",
                    "250",
                    "--output",
                    args.profile_out,
                    "--nonblocking",
                ]
            )
            time.sleep(1)
        rounds = [one_round(base, pid, args.n, tokens) for _ in range(args.rounds)]
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
    print(f"{args.rounds} rounds of {args.n} requests each, one at a time")
    print(f"{'kind':10} {'CPU-ms/request (rounds)':>34} {'median':>7}   {'p50 ms (rounds)':>24}")
    for kind in KINDS:
        cpu = [r[kind][0] for r in rounds]
        p50 = [r[kind][1] for r in rounds]
        print(
            f"{kind:10} {' '.join(f'{c:6.2f}' for c in cpu):>34} {statistics.median(cpu):7.2f}"
            f"   {' '.join(f'{p:5.2f}' for p in p50):>24}"
        )
    cycle = [sum(r[k][0] for k in ("claim", "heartbeat", "complete")) for r in rounds]
    print(
        f"{'cycle':10} {' '.join(f'{c:6.2f}' for c in cycle):>34} {statistics.median(cycle):7.2f}"
    )


if __name__ == "__main__":
    main()
