"""The server's CPU per hot request, and the client's p50, one request at a time.

Run by hand, not in CI:

    .venv/bin/python bench/request_cpu.py                  # embedded PostgreSQL
    .venv/bin/python bench/request_cpu.py --database-url postgresql://postgres@127.0.0.1:5432/
    .venv/bin/python bench/request_cpu.py --rounds 3 -n 300

It starts a real `stateowner serve` on a fresh database (as bench/bench.py does), then, from one
client and one request at a time, runs each kind as a phase of N: creates, claims, heartbeats,
completes, and (on a second batch) claims and fails. Each phase's figure is the server process's
CPU (every thread's time on a CPU, from /proc/PID/task/*/schedstat: the projections and
bus followers' work on the events the phase appended included) over the phase and a short settle after it,
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

SETTLE_SECONDS = 0.5
KINDS = ("create", "claim", "heartbeat", "complete", "fail")


def thread_ms(pid: int, tid: int) -> float:
    """A thread's time on a CPU so far, in ms: the scheduler's own count (schedstat), in ns, not
    utime+stime, which charge whole clock ticks to whichever thread a tick finds running."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e6
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # a thread that ended (its time is lost: threads here live as long as serve)


class Snapshot:
    """Every thread's CPU so far; a difference counts threads begun since, from nought."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = {int(t): thread_ms(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")}

    def since(self, before: Snapshot) -> tuple[float, float]:
        """CPU-ms between the two: every thread, and the main thread (the event loop) alone."""
        total = sum(ms - before.threads.get(tid, 0.0) for tid, ms in self.threads.items())
        return total, self.threads[self.pid] - before.threads[self.pid]


def idle_rate(pid: int, seconds: float = 2.0) -> tuple[float, float]:
    """What the idle server burns (pollers, sweeps), in CPU-ms per second: all, event loop."""
    before, started = Snapshot(pid), time.perf_counter()
    time.sleep(seconds)
    total, loop = Snapshot(pid).since(before)
    elapsed = time.perf_counter() - started
    return total / elapsed, loop / elapsed


Figures = tuple[float, float, float]


def phase(
    pid: int, idle: tuple[float, float], count: int, send: Callable[[int], httpx.Response]
) -> Figures:
    """Send `count` requests one at a time: (server CPU-ms per request, of it the event loop's,
    client p50 ms)."""
    latencies = []
    before, started = Snapshot(pid), time.perf_counter()
    for n in range(count):
        sent = time.perf_counter()
        response = send(n)
        latencies.append((time.perf_counter() - sent) * 1000)
        response.raise_for_status()
    time.sleep(SETTLE_SECONDS)
    total, loop = Snapshot(pid).since(before)
    elapsed = time.perf_counter() - started
    return (
        (total - idle[0] * elapsed) / count,
        (loop - idle[1] * elapsed) / count,
        statistics.median(latencies),
    )


def one_round(base: str, pid: int, count: int, tokens: dict[str, str]) -> dict[str, Figures]:
    figures: dict[str, Figures] = {}
    idle = idle_rate(pid)
    print(f"idle server: {idle[0]:.1f} CPU-ms/s, event loop {idle[1]:.1f}", flush=True)
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
                    "--gil",
                ]
            )
            time.sleep(1)
        rounds = [one_round(base, pid, args.n, tokens) for _ in range(args.rounds)]
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
    print(f"{args.rounds} rounds of {args.n} requests each, one at a time")
    print(f"{'kind':10} {'CPU-ms/request':>24} {'of it event loop':>24} {'client p50 ms':>24}")
    cycle = ("claim", "heartbeat", "complete")
    for kind in (*KINDS, "cycle"):
        columns = []
        for column in range(3):
            if kind == "cycle":
                values = [sum(r[k][column] for k in cycle) for r in rounds]
            else:
                values = [r[kind][column] for r in rounds]
            median = statistics.median(values)
            spread = f"{min(values):.2f}-{max(values):.2f}"
            columns.append(f"{median:6.2f} ({spread:>11})")
        print(f"{kind:10} {columns[0]:>24} {columns[1]:>24} {columns[2]:>24}")


if __name__ == "__main__":
    main()
