"""The peer: the same two- and three-stage pipeline as a Celery chain over the local Redis.

    .venv/bin/python bench/peer.py [--handoffs 200] [--items 400]

Each stage is a task that marks when it started and when it ended and hands its result to the
next; the last pushes the marks to a Redis list the benchmark waits on. Hand-off latency is one
task's end to the next task's start (p50/p99, one item at a time, as bench.py times stateowner's
hand-off); items/s is many three-stage chains sent at once. Celery keeps no log of it, no
exactly-once advancement and no audit: what it does is the floor, not the same thing.

Needs Redis at 127.0.0.1:6379 (the bench-only dependency group installs celery and redis).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery, chain

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = os.environ.get("BENCH_PEER_QUEUE", "stateowner-peer")
DONE = f"{QUEUE}:done"
WORKER_THREADS = 8

app = Celery("peer", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_results: redis.Redis | None = None


def results() -> redis.Redis:
    global _results
    if _results is None:
        _results = redis.Redis.from_url(REDIS_URL, socket_timeout=None, socket_connect_timeout=5)
    return _results


@app.task(name="peer.stage")
def stage(trace: dict[str, Any], index: int, last: int) -> dict[str, Any]:
    """One stage's work (none: the hand-off is what is measured), its start and end marked."""
    started = time.time()
    trace["marks"].append([started, time.time()])
    if index == last:
        results().rpush(trace["done"], json.dumps(trace))
    return trace


@dataclass(frozen=True)
class PeerFigures:
    handoffs_ms: list[float]
    items_per_second: float
    items: int


def handoffs(trace: dict[str, Any]) -> list[float]:
    """Each hand-off in a finished chain: a task's end to the next one's start, in ms."""
    marks = trace["marks"]
    return [(marks[k + 1][0] - marks[k][1]) * 1000 for k in range(len(marks) - 1)]


def redis_down() -> str | None:
    """Why the peer cannot run, or None when Redis answers."""
    try:
        results().ping()
    except redis.RedisError as error:
        return f"Redis at {REDIS_URL} does not answer ({type(error).__name__}: {error})"
    return None


@contextmanager
def worker(threads: int = WORKER_THREADS) -> Iterator[None]:
    """A Celery worker of its own, on a queue of its own, stopped afterwards."""
    bench = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": str(bench), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "celery",
            "--app",
            "peer:app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(threads),
            "--queues",
            QUEUE,
            "--loglevel",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=bench,
        env=env,
        stdout=subprocess.DEVNULL,  # its banner; errors still reach stderr
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def send(stages: int, done: str) -> None:
    trace: dict[str, Any] = {"marks": [], "done": done}
    chain(
        stage.s(trace, 0, stages - 1), *(stage.s(n, stages - 1) for n in range(1, stages))
    ).delay()


def wait_done(done: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    finished = []
    for _ in range(count):
        popped = results().blpop([done], timeout=timeout)
        if popped is None:
            raise TimeoutError(f"the Celery chain did not finish in {timeout} s")
        finished.append(json.loads(popped[1]))
    return finished


def run(handoff_items: int, rate_items: int) -> PeerFigures:
    """Hand-offs through a two-stage chain, one item at a time; then items/s through a
    three-stage one with `rate_items` chains sent at once."""
    done = f"{DONE}:{uuid.uuid4().hex[:8]}"
    results().delete(QUEUE)  # what an interrupted run left
    with worker():
        send(2, done)
        wait_done(done, 1, timeout=120)  # the worker is up and warm
        latencies: list[float] = []
        for _ in range(handoff_items):
            send(2, done)
            latencies.extend(handoffs(wait_done(done, 1)[0]))
        started = time.perf_counter()
        for _ in range(rate_items):
            send(3, done)
        wait_done(done, rate_items, timeout=300)
        rate = rate_items / (time.perf_counter() - started)
    results().delete(done)
    return PeerFigures(latencies, rate, rate_items)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--handoffs", type=int, default=200)
    parser.add_argument("--items", type=int, default=400)
    args = parser.parse_args()
    why = redis_down()
    if why is not None:
        print(f"peer skipped: {why}")
        return
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.reads import percentile

    figures = run(args.handoffs, args.items)
    print(
        f"Celery hand-off: p50 {percentile(figures.handoffs_ms, 0.5):6.2f} ms   "
        f"p99 {percentile(figures.handoffs_ms, 0.99):6.2f} ms; "
        f"three-stage chains: {figures.items_per_second:6.0f} items/s"
    )


if __name__ == "__main__":
    main()
