"""Reads as the log grows: item lookup, item history and list-by-status over real HTTP, and the
query plans the service runs for them.

    .venv/bin/python bench/reads.py --database-url URL [--samples 300]
    .venv/bin/python bench/reads.py --database-url URL --explain docs/perf/explain-1m.txt

It reads a log already there (seed one with bench/seed.py), through a `stateowner serve` it
starts, and prints each read's p50 and p99. bench/bench.py runs it at 10k and at 1M events.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if __name__ == "__main__":
    # Run as a script: import from the repo's root, not from bench/ (whose bench.py would
    # shadow the folder).
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(ROOT))

# The reads timed, each a route and the query string it is called with.
LIST_STAGE, LIST_STATUS = "review", "done"
READY_STAGE = "write"
# A page the small log fills too (12 items are ready at write at 10k), so both answer as much.
READY_LIMIT = 10
LATER_PAGE = 5
WARM_UP = 20


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Latency:
    """One read's timings, in milliseconds."""

    name: str
    samples: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99)


def sample_items(database_url: str, count: int, seed: int = 7) -> list[str]:
    """Item ids spread over the whole log, oldest to newest."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT item_id FROM item_status ORDER BY created_at, item_id"
        ).fetchall()
    ids = [str(row[0]) for row in rows]
    rng = random.Random(seed)  # noqa: S311 -- the same spread each run, not a secret
    return [rng.choice(ids) for _ in range(count)]


def later_cursor(http: httpx.Client, params: dict[str, str], pages: int) -> str | None:
    """The cursor of the `pages`-th page of a listing (or the deepest there is)."""
    cursor = None
    for _ in range(pages - 1):
        body = http.get("/v1/items", params={**params, **({"cursor": cursor} if cursor else {})})
        body.raise_for_status()
        following = body.json()["next_cursor"]
        if following is None:
            break
        cursor = following
    return cursor


Call = Callable[[int], httpx.Response]


def timed(names: list[str], samples: int, calls: list[list[Call]]) -> list[list[Latency]]:
    """Each read on each server, the servers taking turns request by request (so a busy moment
    of the machine falls on all of them alike); `calls[server][read]`."""
    for server in calls:
        for call in server:
            for n in range(WARM_UP):
                call(n).raise_for_status()
    latencies = [[[0.0] * samples for _ in names] for _ in calls]
    for read in range(len(names)):
        for n in range(samples):
            for server, server_calls in enumerate(calls):
                started = time.perf_counter()
                response = server_calls[read](n)
                latencies[server][read][n] = (time.perf_counter() - started) * 1000
                response.raise_for_status()
    return [
        [Latency(name, values) for name, values in zip(names, server, strict=True)]
        for server in latencies
    ]


def _calls(http: httpx.Client, items: list[str]) -> list[Call]:
    listing = {"stage": LIST_STAGE, "status": LIST_STATUS}
    ready = {"stage": READY_STAGE, "status": "ready", "limit": str(READY_LIMIT)}
    cursor = later_cursor(http, listing, LATER_PAGE)
    later = {**listing, **({"cursor": cursor} if cursor else {})}
    return [
        lambda n: http.get(f"/v1/items/{items[n]}"),
        lambda n: http.get(f"/v1/items/{items[n]}/events"),
        lambda _: http.get("/v1/items", params=listing),
        lambda _: http.get("/v1/items", params=later),
        lambda _: http.get("/v1/items", params=ready),
    ]


READS = ["item lookup", "item history", "list by status", f"list, page {LATER_PAGE}", "list ready"]


def measure_together(
    servers: list[tuple[str, str]], token: str, samples: int
) -> list[list[Latency]]:
    """p50/p99 of each read on each (served base URL, database URL), one request at a time over
    HTTP on loopback, the servers taking turns."""
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=base, headers=headers, timeout=30) for base, _ in servers]
    try:
        calls = [
            _calls(http, sample_items(database_url, samples + WARM_UP))
            for http, (_, database_url) in zip(clients, servers, strict=True)
        ]
        return timed(READS, samples, calls)
    finally:
        for http in clients:
            http.close()


def measure(base: str, token: str, database_url: str, samples: int) -> list[Latency]:
    return measure_together([(base, database_url)], token, samples)[0]


class _Plans:
    """A stand-in for the read pool that EXPLAINs each statement the queries send (with the
    service's own SQL and parameters) instead of answering it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.plans: list[str] = []

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[_Plans]:
        yield self

    def execute(self, query: Any, params: Any = None, **_: Any) -> _Plans:
        statement = query if isinstance(query, sql.Composable) else sql.SQL(query)
        explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + statement
        rows = self.conn.execute(explain, params).fetchall()
        self.plans.append(
            statement.as_string(self.conn) + "\n" + "\n".join(str(row[0]) for row in rows)
        )
        return self

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []


def explain(database_url: str) -> str:
    """The plans of the statements behind each timed read, on this database as it stands."""
    from projections.queries import Queries, encode_cursor

    item = sample_items(database_url, 1, seed=11)[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        later = conn.execute(
            "SELECT created_at, item_id FROM item_status WHERE stage = %s AND status = %s "
            "ORDER BY created_at, item_id OFFSET %s LIMIT 1",
            (LIST_STAGE, LIST_STATUS, 50 * (LATER_PAGE - 1) - 1),
        ).fetchone()
        events, items = (
            conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()[0]  # type: ignore[index]
            for table in ("stateowner_events", "item_status")
        )
        plans = _Plans(conn)
        queries = Queries(plans)  # type: ignore[arg-type]
        uid = uuid.UUID(item)
        sections = [
            ("item lookup: GET /v1/items/{id}", lambda: queries.item(uid)),
            (
                "item history: GET /v1/items/{id}/events (its first event, then the first page)",
                lambda: (
                    queries.stored_events(uid, after_version=0, limit=1),
                    queries.stored_events(uid, after_version=0, limit=101),
                ),
            ),
            (
                f"list by status: GET /v1/items?stage={LIST_STAGE}&status={LIST_STATUS}",
                lambda: queries.items(stage=LIST_STAGE, status=LIST_STATUS, limit=50),
            ),
            (
                f"list by status, page {LATER_PAGE}",
                lambda: queries.items(
                    stage=LIST_STAGE,
                    status=LIST_STATUS,
                    limit=50,
                    cursor=encode_cursor(*later) if later else None,
                ),
            ),
            (
                f"list ready: GET /v1/items?stage={READY_STAGE}&status=ready&limit={READY_LIMIT}",
                lambda: queries.items(stage=READY_STAGE, status="ready", limit=READY_LIMIT),
            ),
        ]
        out = [
            f"EXPLAIN (ANALYZE, BUFFERS) of the reads, on a log of {events:,} events, {items:,} items\n"
        ]
        for title, run in sections:
            plans.plans.clear()
            run()
            out.append(f"== {title}\n" + "\n\n".join(plans.plans) + "\n")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        action="append",
        help="a seeded database; give two (say 10k and 1M) to measure them together, "
        "taking turns, each p99 beside the first's",
    )
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--explain", type=Path, help="write the plans here instead of timing")
    args = parser.parse_args()
    urls = args.database_url or (
        [os.environ["STATEOWNER_DATABASE_URL"]] if "STATEOWNER_DATABASE_URL" in os.environ else []
    )
    if not urls:
        parser.error("--database-url (or STATEOWNER_DATABASE_URL) is required")
    if args.explain:
        args.explain.parent.mkdir(parents=True, exist_ok=True)
        args.explain.write_text(explain(urls[-1]))
        print(f"plans written to {args.explain}")
        return
    from bench import bench

    with ExitStack() as stack:
        servers = [
            (stack.enter_context(bench.served(url, bench.free_port()))[0], url) for url in urls
        ]
        measured = measure_together(servers, bench.ADMIN, args.samples)
    for url, latencies in zip(urls, measured, strict=True):
        print(f"-- {url}")
        for latency, first in zip(latencies, measured[0], strict=True):
            print(
                f"{latency.name:16s} p50 {latency.p50:7.2f} ms   p99 {latency.p99:7.2f} ms"
                f"   p99 / first's {latency.p99 / first.p99:5.2f}x"
            )


if __name__ == "__main__":
    main()
