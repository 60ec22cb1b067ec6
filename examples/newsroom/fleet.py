"""A newsroom of four agents on stateowner, built on the SDK alone.

    research -> draft -> edit -> publish        (edit may send an item back to draft)

Each role is a `Worker` with its own identity and concurrency; the "models" are deterministic
stand-ins (standins.py) that take time and cost money. What it shows:

- research fails now and then (a search time-out): the lease is failed as retryable and retried;
- edit asks for revisions, so items loop back to draft; a stubborn subject would loop forever,
  and the pipeline's loop guard parks it; the desk (this script, as an operator) un-parks it
  once, and the editor, reading in the item's history that the guard stopped it, lets it go;
- every run's tool calls, tokens and cost go into the item's runs; spend adds up against a topic
  budget, which alerts;
- the workers ride out a restart of the service: stop it (even with kill -9), start it again,
  and every item still reaches done, each report applied once.

    STATEOWNER_ADMIN_TOKEN=dev-admin-token ./run serve                      # one shell
    python3 -m venv /tmp/agents && /tmp/agents/bin/pip install ./sdk       # another: the SDK only
    STATEOWNER_ADMIN_TOKEN=dev-admin-token /tmp/agents/bin/python examples/newsroom/fleet.py --items 20
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType

from standins import (
    SearchTimeout,
    StandInModel,
    StandInSearch,
    draft_quality,
    rng_for,
)

from stateowner_client import (
    AlreadyExists,
    Client,
    Event,
    InvalidState,
    Item,
    Job,
    Result,
    StateownerError,
    Worker,
)

MAX_VISITS = 3
SUBJECTS = (
    "Why agents overspend",
    "Leases, not locks",
    "The loop that never ends",
    "Budgets as circuit breakers",
    "Who wrote this draft?",
    "Event logs for auditors",
    "Retries without regret",
    "Waiting time between stages",
)


def spec(lease_seconds: float) -> dict[str, object]:
    return {
        "stages": [
            {
                "name": "research",
                "max_attempts": 4,
                "lease_seconds": lease_seconds,
                "retry_backoff_seconds": 0.5,
            },
            {"name": "draft", "max_attempts": 4, "lease_seconds": lease_seconds},
            {
                "name": "edit",
                "max_attempts": 4,
                "lease_seconds": lease_seconds,
                "on": {"revise": "draft"},
            },
            {"name": "publish", "max_attempts": 4, "lease_seconds": lease_seconds},
        ],
        "max_visits_per_stage": MAX_VISITS,
        "max_transitions": 20,
        "item_budget_usd": 1.0,
    }


@dataclass
class Newsroom:
    """The four roles' handlers, sharing the stand-ins and a tally for the console."""

    speed: float
    seed: int
    say: Callable[[str], None]
    tally: Counter[str] = field(default_factory=Counter)
    history: Callable[[str], Iterable[Event]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.search = StandInSearch(speed=self.speed, seed=self.seed)
        self.reader = StandInModel("reader-s", 0.0005, 0.0015, 0.6, self.speed, self.seed)
        self.writer = StandInModel("writer-l", 0.003, 0.012, 1.2, self.speed, self.seed)
        self.critic = StandInModel("critic-m", 0.001, 0.004, 0.8, self.speed, self.seed)

    def count(self, what: str) -> None:
        with self.lock:
            self.tally[what] += 1

    def research(self, job: Job) -> Result:
        title = job.item.title
        job.trace.set(model=self.reader.name)
        try:
            with job.trace.tool("web.search", input={"q": title}) as call:
                hits = self.search.search(title, attempt=job.attempt)
                call.output = {"hits": len(hits)}
        except SearchTimeout:
            self.count("retries")
            self.say(f"research  {title!r}: search timed out (attempt {job.attempt}), retried")
            raise
        notes = self.reader.generate(
            f"summarise {len(hits)} sources on {title}",
            max_tokens=400,
            context_tokens=700 * len(hits),
        )
        return Result(
            output={"sources": hits, "notes": notes.text},
            cost_usd=notes.cost_usd,
            tokens_in=notes.tokens_in,
            tokens_out=notes.tokens_out,
        )

    def draft(self, job: Job) -> Result:
        visit = job.item.visits.get("draft", 1)
        feedback = job.outputs.get("edit", {}).get("feedback", "")
        job.trace.set(model=self.writer.name, visit=visit)
        text = self.writer.generate(
            f"draft {job.item.title} v{visit} {feedback}", max_tokens=1200, context_tokens=600
        )
        return Result(
            output={"text": text.text, "visit": visit},
            cost_usd=text.cost_usd,
            tokens_in=text.tokens_in,
            tokens_out=text.tokens_out,
        )

    def edit(self, job: Job) -> Result:
        title = job.item.title
        drafts = job.item.visits.get("draft", 1)
        stubborn = bool(job.input.get("stubborn"))
        quality = draft_quality(title, drafts, seed=self.seed, stubborn=stubborn)
        job.trace.set(model=self.critic.name, quality=round(quality, 2))
        with job.trace.tool("style.check", input={"draft": drafts}) as call:
            review = self.critic.generate(
                f"review {title} draft {drafts}", max_tokens=300, context_tokens=1000
            )
            call.output = {"quality": round(quality, 2)}

        def verdict(output: dict[str, object], outcome: str | None = None) -> Result:
            return Result(
                output=output,
                outcome=outcome,
                cost_usd=review.cost_usd,
                tokens_in=review.tokens_in,
                tokens_out=review.tokens_out,
            )

        if quality >= 0.6:
            return verdict({"verdict": "accepted", "quality": quality})
        if drafts >= MAX_VISITS and self.overruled(job):
            # The loop guard stopped the revisions and the desk sent the item on: publish it.
            self.say(f"edit      {title!r}: the desk overruled; accepted as it stands")
            return verdict({"verdict": "accepted as it stands", "quality": quality})
        self.count("revisions")
        self.say(f"edit      {title!r}: draft {drafts} sent back for revision")
        return verdict({"verdict": "revise", "feedback": review.text[:80]}, "revise")

    def overruled(self, job: Job) -> bool:
        """Whether the loop guard parked this item once already (the editor reads its history:
        an agent that worked on an item may)."""
        assert self.history is not None
        return any(
            event.type == "ItemParked" and event.data.get("reason") == "loop_guard"
            for event in self.history(job.item.id)
        )

    def publish(self, job: Job) -> Result:
        rng = rng_for(self.seed, "slug", job.item.id)
        with job.trace.tool("cms.publish", input={"title": job.item.title}) as call:
            time.sleep(0.1 * self.speed)
            call.output = {"url": f"https://news.example.org/{rng.randint(1000, 9999)}"}
        self.count("published")
        return Result(output=call.output, cost_usd=0.0005)


ROLES = {  # role -> (stage, concurrency)
    "researcher": ("research", 2),
    "writer": ("draft", 3),
    "editor": ("edit", 2),
    "publisher": ("publish", 1),
}


def register(admin: Client, prefix: str) -> dict[str, str]:
    """One agent identity per role; on a second run the same names get fresh tokens."""
    tokens = {}
    for role, (stage, _) in ROLES.items():
        name = f"{prefix}-{role}"
        try:
            agent = admin.create_agent(name, "agent", [stage])
        except AlreadyExists:
            admin.set_agent_stages(name, [stage])
            agent = admin.rotate_token(name)
        assert agent.token is not None
        tokens[role] = agent.token
    return tokens


class Console:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def say(self, line: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.started:6.1f}s] {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A newsroom of four agents on stateowner.")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument(
        "--base-url", default=os.environ.get("STATEOWNER_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--topic", default=f"newsroom-{int(time.time())}")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor for the stand-ins")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stubborn-every", type=int, default=8, help="0: no stubborn subject")
    parser.add_argument("--lease-seconds", type=float, default=30)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--verbose", action="store_true", help="the SDK's own log lines too")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The handlers narrate what matters; the SDK's lines (with tracebacks) on request.
    logging.getLogger("stateowner_client").setLevel(logging.INFO if args.verbose else logging.ERROR)
    token = os.environ.get("STATEOWNER_ADMIN_TOKEN")
    if not token:
        parser.error("set STATEOWNER_ADMIN_TOKEN to the token `./run serve` was started with")

    console = Console()
    newsroom = Newsroom(args.speed, args.seed, console.say)
    with Client(args.base_url, token) as admin:
        ids, tokens = prepare(admin, console, args)
        workers = []
        for role, (stage, concurrency) in ROLES.items():
            worker = Worker(args.base_url, token=tokens[role], concurrency=concurrency)
            worker.stage(stage)(getattr(newsroom, stage))
            workers.append(worker)
            if stage == "edit":
                newsroom.history = worker.client.item_events
        threads = [threading.Thread(target=w.run, name=f"worker-{w.stages[0]}") for w in workers]
        stopping = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            console.say("stopping: running jobs finish, or their leases are handed back")
            stopping.set()
            for worker in workers:
                worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for thread in threads:
            thread.start()
        outcome = watch(admin, newsroom, console, args, ids, threads, stopping)
        console.say("stopping the workers (each waits for the claim it has in flight)")
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join()
        try:
            summarise(admin, console, args, ids, workers)
        except StateownerError as error:
            console.say(f"no summary: {error}")
    return outcome


def prepare(
    admin: Client, console: Console, args: argparse.Namespace
) -> tuple[list[str], dict[str, str]]:
    """The pipeline, the agents (their tokens), a budget on the topic, and the items."""
    admin.put_pipeline("newsroom", spec(args.lease_seconds))
    tokens = register(admin, "newsroom")
    scope = f"topic:{args.topic}"
    alert = 0.01 * args.items
    admin.put_budget(scope, alert_usd=alert, halt_usd=1.0 * args.items)
    ids = []
    for n in range(args.items):
        every = args.stubborn_every
        item = admin.create_item(
            "newsroom",
            args.topic,
            f"{SUBJECTS[n % len(SUBJECTS)]} #{n + 1}",
            {"stubborn": every > 0 and n % every == every - 1},
            idempotency_key=f"{args.topic}/{n}",  # a re-run on the same topic adds nothing
        )
        ids.append(item.id)
    console.say(
        f"{len(ids)} items on topic {args.topic}; budget {scope} alerts at ${alert:.2f}; "
        f"agents: {', '.join(ROLES)}"
    )
    # Claims are by stage, whatever the topic: what an earlier run left open is worked on too.
    earlier = sum(
        item.pipeline == "newsroom" and item.topic != args.topic
        for status in ("ready", "claimed", "advancing")
        for item in admin.list_items(status=status, page_size=500)
    )
    if earlier:
        console.say(
            f"{earlier} newsroom items of earlier runs are still open: the workers take them too"
        )
    return ids, tokens


def watch(
    admin: Client,
    newsroom: Newsroom,
    console: Console,
    args: argparse.Namespace,
    ids: list[str],
    threads: list[threading.Thread],
    stopping: threading.Event,
) -> int:
    """Print progress until every item is done (0), one is stuck or a worker died (1), time is
    up (2) or a signal came (3). As the desk, un-park each item the loop guard stopped, once."""
    deadline = time.monotonic() + args.timeout
    unparked: set[str] = set()
    last_line = ""
    outage = False
    while not stopping.wait(0.5):
        if not all(thread.is_alive() for thread in threads):
            console.say("a worker stopped on an error")
            return 1
        try:
            items = list(admin.list_items(topic=args.topic, page_size=500))
            budget = next(b for b in admin.list_budgets() if b.scope == f"topic:{args.topic}")
            stuck = desk(admin, console, items, unparked)
        except StateownerError as error:
            if not outage:
                console.say(f"the service is not answering ({type(error).__name__}); waiting")
            outage = True
            continue
        if outage:
            console.say("the service answers again")
            outage = False
        statuses = Counter(item.status for item in items)
        busy = " · ".join(
            f"{s} {statuses[s]}" for s in ("ready", "claimed", "advancing", "parked") if statuses[s]
        )
        line = (
            f"done {statuses['done']}/{len(ids)} · {busy or 'idle'} · "
            f"spent ${budget.spent_usd:.4f} ({budget.state}) · "
            f"revisions {newsroom.tally['revisions']} · retries {newsroom.tally['retries']}"
        )
        if line != last_line:
            console.say(line)
            last_line = line
        if statuses["done"] + statuses["cancelled"] == len(ids):
            return 0
        if stuck or statuses["halted"]:
            return 1
        if time.monotonic() > deadline:
            console.say("timed out")
            return 2
    return 3


def desk(admin: Client, console: Console, items: list[Item], unparked: set[str]) -> list[Item]:
    """Un-park what the loop guard parked, once per item; return the items parked for good."""
    stuck = []
    for item in items:
        if item.status != "parked":
            continue
        if item.id in unparked or parked_reason(admin, item.id) != "loop_guard":
            stuck.append(item)
            continue
        unparked.add(item.id)
        console.say(f"desk      {item.title!r}: parked by the loop guard; un-parked")
        with contextlib.suppress(InvalidState):  # someone else un-parked it first
            admin.retry(item.id)
    return stuck


def parked_reason(admin: Client, item_id: str) -> str:
    parked = [e for e in admin.item_events(item_id) if e.type == "ItemParked"]
    return str(parked[-1].data.get("reason", "")) if parked else ""


def summarise(
    admin: Client,
    console: Console,
    args: argparse.Namespace,
    ids: list[str],
    workers: list[Worker],
) -> None:
    console.say(
        "workers: "
        + "; ".join(
            f"{w.stages[0]} claimed {w.stats.claimed}, completed {w.stats.completed}, "
            f"failed {w.stats.failed}, waited out {w.stats.unavailable} refusals or outages"
            for w in workers
        )
    )
    for budget in admin.list_budgets():
        if budget.scope == f"topic:{args.topic}":
            console.say(
                f"budget {budget.scope}: spent ${budget.spent_usd:.4f}, alert ${budget.alert_usd:.2f}, "
                f"halt ${budget.halt_usd:.2f}: {budget.state}"
            )
    example = max(ids, key=lambda i: admin.get_item(i).transitions)
    item = admin.get_item(example)
    runs = list(admin.item_runs(example))
    console.say(
        f"busiest item {item.title!r}: {item.status}, {len(runs)} runs, "
        f"${item.cost_usd:.4f}, tokens {item.tokens.in_} in / {item.tokens.out} out"
    )
    for run in runs:
        calls = ", ".join(
            f"{c['name']} {c['duration_ms']:.0f} ms"
            for c in (run.trace or {}).get("tool_calls", [])
        )
        console.say(
            f"  {run.stage:8} attempt {run.attempt} {run.result:9} {run.outcome or run.error or '':30.30}"
            f" ${run.cost_usd:.4f} {run.duration_ms} ms {calls}"
        )


if __name__ == "__main__":
    sys.exit(main())
