"""Seed a big, realistic event log in bulk, not through the API: for benchmarking reads.

    .venv/bin/python bench/seed.py --events 1000000 --database-url postgresql://...

Items go through two pipelines (research -> write -> review, where review may send the item
back to write; and classify -> route) by agents that claim, heartbeat, complete and fail; some
are retried after a backoff, some parked, and the newest are left ready or claimed, as a live
log has them. The domain's own aggregates record every event (and the decision appended with
each lease's end, as `StateOwner._decide_now` does), the application's own mapper encodes it,
and COPY writes the rows in big batches with what the append function would have given them:
gap-free positions after the head, the hash chain (store/chain.py), the sequence moved on, each
item's versions in order. Agents, pipelines, topics and budgets are few and go through the
application as usual. Then the views catch up from where they stand (one pass, like their
follower), and the bus's position moves to the head: every trigger in the seeded log was
decided in its own append, so there is nothing for it to decide.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Connection, sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the service's packages live at the root
    sys.path.insert(0, str(ROOT))

from api.container import Container  # noqa: E402
from api.settings import Settings  # noqa: E402
from domain.agent import Role, hash_token  # noqa: E402
from domain.application import StateOwner  # noqa: E402
from domain.errors import NotFound  # noqa: E402
from domain.item import Item, LeaseEnded, Status  # noqa: E402
from domain.values import (  # noqa: E402
    By,
    Claimant,
    Completion,
    Failure,
    Limits,
    NewItem,
    Registration,
    Report,
    TopicFacts,
)
from projections.base import ViewGroup  # noqa: E402
from projections.follower import read_batch  # noqa: E402
from projections.maintenance import VIEWS  # noqa: E402
from projections.poison import DeadLetters  # noqa: E402
from store.chain import GENESIS, link  # noqa: E402
from store.database import Database  # noqa: E402

COPY_BATCH = 20_000
CATCH_UP_BATCH = 2_000
OPERATOR = "operator:seed"
PIPELINES: dict[str, dict[str, Any]] = {
    "seed-articles": {
        "stages": [
            {"name": "research", "lease_seconds": 3600},
            {"name": "write", "lease_seconds": 3600, "max_attempts": 3},
            {"name": "review", "lease_seconds": 3600, "on": {"revise": "write"}},
        ],
        "max_visits_per_stage": 3,
    },
    "seed-triage": {
        "stages": [
            {"name": "classify", "lease_seconds": 3600},
            {"name": "route", "lease_seconds": 3600},
        ],
    },
}
AGENTS_PER_STAGE = 6
TOPICS = 40
MODELS = ("claude-sonnet-4", "claude-haiku-4", "gpt-4.1-mini")


@dataclass(frozen=True)
class Mix:
    """How runs go: the share that fail and may be retried, that fail for good, that send a
    review back, that the log leaves unfinished, and how many heartbeats a run sends."""

    retryable_failure: float = 0.05
    final_failure: float = 0.005
    revise: float = 0.1
    unfinished: float = 0.15
    heartbeats: tuple[int, ...] = (0, 1, 1, 2, 3)


@dataclass
class Seeded:
    """What one seeding appended."""

    events: int = 0
    items: int = 0
    head: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Chain:
    """The log's head as the seed extends it: the next position and the hash before it."""

    position: int
    previous: bytes

    def extend(
        self, originator_id: uuid.UUID, version: int, topic: str, state: bytes
    ) -> tuple[int, bytes]:
        self.position += 1
        self.previous = link(self.previous, self.position, originator_id, version, topic, state)
        return self.position, self.previous


def request_id(rng: random.Random) -> str:
    return f"seed-{rng.getrandbits(48):012x}"


def simulate_item(
    rng: random.Random,
    pipeline: str,
    pipeline_version: int,
    spec: Any,
    agents: dict[str, list[str]],
    mix: Mix,
    clock: Callable[[], datetime],
    number: int,
) -> Item:
    """One item's life, as the service would record it, with its events pending."""
    topic = f"seed-topic-{rng.randrange(TOPICS)}"
    creator = rng.choice(agents[spec.first_stage])
    item = Item.start(
        uuid.uuid4(),
        NewItem(
            pipeline=pipeline,
            topic=topic,
            title=f"{pipeline} item {number}",
            input={
                "source": f"https://example.org/{number}",
                "brief": "x" * rng.randrange(40, 200),
            },
        ),
        pipeline_version=pipeline_version,
        spec=spec,
        by=By(f"agent:{creator}", request_id(rng)),
    )
    leave_after = rng.randrange(0, 4) if rng.random() < mix.unfinished else None
    leave_claimed = rng.random() < 0.5
    runs = 0
    while item.status == Status.READY:  # done, parked or halted: its life here ends
        leaving = leave_after is not None and runs >= leave_after
        if leaving and not leave_claimed:
            break
        stage = item.stage
        name = rng.choice(agents[stage])
        claimant = Claimant(name, frozenset({stage}))
        now = clock()
        if item.not_before is not None and item.not_before > now:
            now = item.not_before
        by = By(f"agent:{name}", request_id(rng))
        lease = item.claim(stage, claimant, now, by)
        if leaving:
            break
        for _ in range(rng.choice(mix.heartbeats)):
            item.renew_lease(lease, claimant, now, By(by.actor, request_id(rng)))
        report = Report(
            cost_usd=Decimal(rng.randrange(1, 4000)) / 10000,
            tokens_in=rng.randrange(200, 8000),
            tokens_out=rng.randrange(50, 2000),
            duration_ms=rng.randrange(300, 60000),
            trace=[{"tool": "search", "ms": rng.randrange(5, 500)}] if rng.random() < 0.3 else None,
            model=rng.choice(MODELS),
        )
        by = By(by.actor, request_id(rng))
        roll = rng.random()
        if roll < mix.retryable_failure:
            item.fail_stage(lease, claimant, Failure("upstream timeout", True, report), now, by)
        elif roll < mix.retryable_failure + mix.final_failure:
            item.fail_stage(lease, claimant, Failure("input rejected", False, report), now, by)
        else:
            outcome = "revise" if stage == "review" and rng.random() < mix.revise else None
            output = {"summary": "y" * rng.randrange(40, 300), "stage": stage}
            item.complete_stage(lease, claimant, Completion(output, outcome, report), now, by)
        trigger = item.pending_events[-1]
        assert isinstance(trigger, LeaseEnded)
        item.decide(trigger, now, trigger.answered_by())
        runs += 1
    return item


def _fixtures(app: StateOwner, rng: random.Random) -> dict[str, list[str]]:
    """Pipelines, agents, topics and budgets through the application (once per database);
    returns each stage's agents."""
    by = By(OPERATOR, request_id(rng))
    agents: dict[str, list[str]] = {}
    for name, spec in PIPELINES.items():
        try:
            app.pipeline(name)
        except NotFound:
            app.put_pipeline(name, spec, by)
        for stage in spec["stages"]:
            names = [f"seed-{stage['name']}-{n}" for n in range(AGENTS_PER_STAGE)]
            agents[stage["name"]] = names
            for agent in names:
                try:
                    app.agent(agent)
                except NotFound:
                    app.register_agent(
                        Registration(
                            agent, Role.AGENT, (stage["name"],), hash_token(uuid.uuid4().hex)
                        ),
                        by,
                    )
    for n in range(TOPICS):
        app.put_topic(f"seed-topic-{n}", TopicFacts(owner="seed", priority=n % 3), by)
    for scope in ("global", "stage:write", "topic:seed-topic-0"):
        app.put_budget(scope, Limits(Decimal(10**8), Decimal(10**9)), by)
    return agents


def _head(conn: Connection[Any], table: sql.Composed) -> Chain:
    row = conn.execute(
        sql.SQL(
            "SELECT notification_id, hash FROM {} ORDER BY notification_id DESC LIMIT 1"
        ).format(table)
    ).fetchone()
    if row is None:
        return Chain(0, GENESIS)
    return Chain(int(row[0]), bytes(row[1]))


def _write(
    conn: Connection[Any], table: sql.Composed, sequence: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """One batch in one transaction, under the lock the append function takes, after checking
    that nothing was appended since the seed read the head."""
    with conn.transaction():
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        head = conn.execute(sql.SQL("SELECT max(notification_id) FROM {}").format(table)).fetchone()
        expected = rows[0][0] - 1
        if (head[0] if head else None) not in ((expected,) if expected else (None, 0)):
            raise RuntimeError("the log moved while seeding: seed an idle database")
        with conn.cursor() as curs:
            columns = "notification_id, originator_id, originator_version, topic, state, hash"
            with curs.copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, sql.SQL(columns))
            ) as copy:
                copy.set_types(["int8", "uuid", "int8", "text", "bytea", "bytea"])
                for row in rows:
                    copy.write_row(row)
        conn.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)",
            (sequence, rows[-1][0]),
        )


def encoded_rows(app: StateOwner, items: Iterator[Item], chain: Chain) -> Iterator[tuple[Any, ...]]:
    """Each pending event of each item as the log stores it, with its position and hash."""
    for item in items:
        for event in item.collect_events():
            stored = app.mapper.to_stored_event(event)
            originator_id = uuid.UUID(str(stored.originator_id))
            position, digest = chain.extend(
                originator_id, stored.originator_version, stored.topic, stored.state
            )
            yield (
                position,
                originator_id,
                stored.originator_version,
                stored.topic,
                stored.state,
                digest,
            )


def catch_up_views(conninfo: str, names: Sequence[str]) -> int:
    """Bring the named views to the head in one pass, as their follower would (not live: no
    wake-ups for claims nobody is waiting on). Their tables exist already."""
    database = Database(conninfo)
    app = StateOwner(env={**database.eventsourcing_env(pool_size=2), "CREATE_TABLE": "n"})
    store = database.datastore(pool_size=2)
    try:
        group = ViewGroup([VIEWS[name](store, live=False) for name in names], DeadLetters(store))
        after = group.position()
        while batch := read_batch(app.recorder, app.mapper, after, CATCH_UP_BATCH, stop=None):
            group.process_batch(batch, after)
            after = batch[-1][1]
        return after
    finally:
        store.close()
        app.close()


def catch_up(conninfo: str) -> int:
    """Every view to the head. (Sets of views side by side, a process each, were slower on two
    cores: each process reads and decodes the whole log again.)"""
    return catch_up_views(conninfo, list(VIEWS))


def seed(
    database_url: str,
    events: int,
    *,
    random_seed: int = 13,
    mix: Mix | None = None,
    progress: Callable[[str], None] | None = None,
) -> Seeded:
    """Append at least `events` events (whole items) to the log, then bring the views and the
    bus to the head. The database should be idle: a concurrent append stops the seed."""
    mix = mix or Mix()
    rng = random.Random(random_seed)  # noqa: S311 -- a reproducible log, not a secret
    started = time.perf_counter()
    say = progress or (lambda _: None)
    container = Container(Settings(database_url=database_url)).start()
    seeded = Seeded()
    try:
        app = container.app
        agents = _fixtures(app, rng)
        pipelines = [(name, app.pipeline(name)) for name in PIPELINES]
        recorder: Any = app.recorder
        schema, events_table = recorder.datastore.schema, recorder.events_table_name
        table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(events_table))
        sequence = f"{schema}.{events_table}"
        with Connection.connect(container.database.conninfo, autocommit=True) as conn:
            chain = _head(conn, table)
            first = chain.position

            def items() -> Iterator[Item]:
                number = 0
                while chain.position - first < events:
                    name, pipeline = pipelines[0] if rng.random() < 0.7 else pipelines[1]
                    number += 1
                    seeded.items += 1
                    yield simulate_item(
                        rng,
                        name,
                        pipeline.version,
                        pipeline.parsed,
                        agents,
                        mix,
                        lambda: datetime.now(UTC),
                        number,
                    )

            batch: list[tuple[Any, ...]] = []
            for row in encoded_rows(app, items(), chain):
                batch.append(row)
                if len(batch) >= COPY_BATCH:
                    _write(conn, table, sequence, batch)
                    say(f"appended {row[0] - first:,} events")
                    batch = []
            if batch:
                _write(conn, table, sequence, batch)
            seeded.events = chain.position - first
            seeded.head = chain.position
        say(f"appended {seeded.events:,} events ({seeded.items:,} items); views catching up")
        catch_up(container.database.conninfo)
        # Every trigger the seed wrote was decided in its own append: nothing for the bus.
        if (recorder.max_tracking_id(StateOwner.name) or 0) < seeded.head:
            recorder.insert_tracking(Tracking(StateOwner.name, seeded.head))
        with Connection.connect(container.database.conninfo, autocommit=True) as conn:
            # The catch-up left a dead row version per update; autovacuum would get there.
            conn.execute("VACUUM ANALYZE")
            rows = conn.execute("SELECT status, count(*) FROM item_status GROUP BY status")
            seeded.statuses = {status: count for status, count in rows.fetchall()}
            conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(recorder.channel_name)))
    finally:
        container.close()
    seeded.seconds = time.perf_counter() - started
    return seeded


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("STATEOWNER_DATABASE_URL"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--random-seed", type=int, default=13)
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or STATEOWNER_DATABASE_URL) is required")
    seeded = seed(args.database_url, args.events, random_seed=args.random_seed, progress=print)
    print(
        f"seeded {seeded.events:,} events ({seeded.items:,} items) in {seeded.seconds:.1f} s "
        f"({seeded.events / seeded.seconds:,.0f} events/s); head {seeded.head:,}; "
        + ", ".join(f"{status} {count:,}" for status, count in sorted(seeded.statuses.items()))
    )


if __name__ == "__main__":
    main()
