"""Claims: how an agent is handed the next ready item at a stage, waiting (bounded) for one."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio

from domain.application import EVALS_HALTED, StateOwner
from domain.errors import BudgetHalted, ConcurrentUpdate, NotFound, OutsideScope, StateConflict
from domain.guards import window_of
from domain.item import Item
from domain.values import By, Claimant
from projections.queries import LeaseCount, Queries
from projections.ready import ReadySignal, RecentClaims

CANDIDATES_PER_TRY = 8
# With the ready signal listening, waiters are woken when work arrives; the recheck only covers
# a signal lost in transit. Without it (its connection is down) they look every second.
SAFETY_RECHECK_SECONDS = 10.0
UNSIGNALLED_RECHECK_SECONDS = 1.0
CONTENDED_RECHECK_SECONDS = 0.01
# A claim held back by a cap looks again this often (a lease's end sends no ready signal).
CAPPED_RECHECK_SECONDS = 0.2
# How long a capped claim waits for item_status to show every lease out before it counts them.
SETTLE_SECONDS = 2.0
# Stage caps are read from the limits view at most this often.
CAPS_TTL_SECONDS = 0.5

ClaimCounter = Callable[[str, str], None]


def _uncounted(stage: str, result: str) -> None:
    pass


class TooManyWaiting(Exception):
    """A claim would wait beside more claims than the service admits (in all, or per agent)."""


@dataclass(frozen=True)
class Claimed:
    """A lease on one stage of one item, and the item as the claim left it."""

    item: Item
    lease_id: str
    position: int


@dataclass(frozen=True)
class _Attempt:
    claimed: Claimed | None
    from_backlog: bool = False
    next_wake: float = 0.0


@dataclass(eq=False)
class Claims:
    """Candidates come from item_status; the item aggregate decides, so two claimers can never
    both hold one stage. A claim that has to wait awaits the ready signal on the event loop —
    no thread, no database work — and looks again when it is woken: by a writer's hint (this
    process's, or any process's through NOTIFY), by a stage's retry time, or at a recheck."""

    app: StateOwner
    queries: Queries
    ready: ReadySignal
    recent: RecentClaims
    limiter: anyio.CapacityLimiter
    max_waiting: int
    max_waiting_per_agent: int
    count: ClaimCounter = _uncounted
    _waiting: Counter[str] = field(default_factory=Counter)
    _closing: threading.Event = field(default_factory=threading.Event)
    _caps: tuple[float, dict[str, dict[str, int]]] = (-CAPS_TTL_SECONDS, {})

    def close(self) -> None:
        """Stop waiting: every waiting claim answers at once, with nothing, so a stopping server
        does not wait out their long polls."""
        self._closing.set()
        self.ready.wake_all()

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

    async def claim(
        self, claimant: Claimant, stage: str, wait_seconds: float, by: By
    ) -> Claimed | None:
        """The oldest ready item at `stage`, or None once `wait_seconds` pass without one."""
        if stage not in claimant.stages:
            self.count(stage, "forbidden")
            raise OutsideScope(
                f"stage {stage!r} is outside your scope ({', '.join(sorted(claimant.stages))})"
            )
        with self._admitted(claimant.name, stage):
            deadline = time.monotonic() + wait_seconds
            woken = False
            try:
                while True:
                    seen = self.ready.generation(stage)
                    attempt = await anyio.to_thread.run_sync(
                        self._attempt, claimant, stage, by, limiter=self.limiter
                    )
                    woken = False
                    if attempt.claimed is not None:
                        self.count(stage, "claimed")
                        if attempt.from_backlog:
                            self.ready.nudge(stage)  # more may be ready than was signalled
                        return attempt.claimed
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closing.is_set():
                        self.count(stage, "empty")
                        return None
                    woken = await self.ready.wait(stage, seen, min(attempt.next_wake, remaining))
            finally:
                if woken:  # woken but refused before it could look: the next waiter looks
                    self.ready.nudge(stage)

    @contextmanager
    def _admitted(self, agent: str, stage: str) -> Iterator[None]:
        if self.waiting >= self.max_waiting:
            self.count(stage, "too_many_waiting")
            raise TooManyWaiting(f"{self.max_waiting} claims are waiting already; try again")
        if self._waiting[agent] >= self.max_waiting_per_agent:
            self.count(stage, "too_many_waiting")
            raise TooManyWaiting(
                f"{agent!r} has {self.max_waiting_per_agent} claims waiting already; try again"
            )
        self._waiting[agent] += 1
        try:
            yield
        finally:
            self._waiting[agent] -= 1
            if not self._waiting[agent]:
                del self._waiting[agent]

    def _attempt(self, claimant: Claimant, stage: str, by: By) -> _Attempt:
        """One look, in a worker thread: breakers, caps, a hinted item, the backlog; and when
        nothing could be claimed, how long to wait before looking again."""
        halted_topics = self._check_breakers(claimant.name, stage)
        caps = self._stage_caps().get(stage, {})
        if not caps and claimant.max_leases is None:
            return self._look(claimant, stage, by, halted_topics)
        # Containment: claims under a cap are made one at a time, each counting the leases out.
        locks = [f"agent:{claimant.name}"] if claimant.max_leases is not None else []
        locks += [f"stage:{stage}"] if caps else []
        capped = _Attempt(None, next_wake=CAPPED_RECHECK_SECONDS)
        with self.queries.leases_counted(locks, SETTLE_SECONDS) as count:
            if count is None:
                return capped
            limit = claimant.max_leases
            if limit is not None and count.by_agent(claimant.name) >= limit:
                self.count(stage, "capped")
                return capped
            out = count.by_pipeline(stage) if caps else {}
            full = frozenset(p for p, cap in caps.items() if out.get(p, 0) >= cap)
            attempt = self._look(claimant, stage, by, halted_topics, full, count)
        if attempt.claimed is None and full:
            self.count(stage, "capped")
            return capped
        return attempt

    def _stage_caps(self) -> dict[str, dict[str, int]]:
        read_at, caps = self._caps
        if time.monotonic() - read_at >= CAPS_TTL_SECONDS:
            caps = self.queries.stage_caps()
            self._caps = (time.monotonic(), caps)
        return caps

    def _look(
        self,
        claimant: Claimant,
        stage: str,
        by: By,
        halted_topics: frozenset[str],
        full: frozenset[str] = frozenset(),
        held: LeaseCount | None = None,
    ) -> _Attempt:
        # An item a writer just made ready goes to one waiter before item_status shows it.
        while (hinted := self.ready.take_hint(stage)) is not None:
            claimed = self._claim_one(hinted, claimant, stage, by, halted_topics, full)
            if claimed is not None:
                return _Attempt(claimed)
        with self.queries.ready_candidates(
            stage,
            self.app.clock(),
            self.recent.current(),
            halted_topics,
            CANDIDATES_PER_TRY,
            full_pipelines=full,
            held=held,
        ) as candidates:
            for item_id in candidates:
                claimed = self._claim_one(item_id, claimant, stage, by, halted_topics, full)
                if claimed is not None:
                    return _Attempt(claimed, from_backlog=True)
        return _Attempt(None, next_wake=self._next_wake(stage))

    def _check_breakers(self, agent: str, stage: str) -> frozenset[str]:
        """Refuse the claim while a breaker over this agent, its stage or everything is open;
        return the topics whose breakers are open, whose items are not to be handed out."""
        own_scopes = {"global", f"stage:{stage}", f"agent:{agent}"}
        halted_topics = set()
        for budget in self.queries.budgets(window_of(self.app.clock())):
            if not budget.halted:
                continue
            if budget.scope in own_scopes:
                self.count(stage, "budget_halted")
                raise BudgetHalted(budget.scope, budget.spent_usd, budget.halt_usd, budget.window)
            if budget.scope.startswith("topic:"):
                halted_topics.add(budget.scope.removeprefix("topic:"))
            elif budget.scope == "eval":
                halted_topics.add(EVALS_HALTED)
        return frozenset(halted_topics)

    def _claim_one(
        self,
        item_id: uuid.UUID,
        claimant: Claimant,
        stage: str,
        by: By,
        halted_topics: frozenset[str],
        full: frozenset[str] = frozenset(),
    ) -> Claimed | None:
        try:
            item, lease_id, position = self.app.claim(
                item_id, stage, claimant, by, halted_topics, full
            )
        except (StateConflict, ConcurrentUpdate, NotFound):
            return None  # another agent won it, or what we read is behind the item
        self.recent.add(item_id, item.version)
        return Claimed(item, lease_id, position)

    def _next_wake(self, stage: str) -> float:
        now = self.app.clock()
        if self.queries.any_ready(stage, now):
            # Ready rows exist but others hold them; if one of those claims fails, no NOTIFY comes.
            return CONTENDED_RECHECK_SECONDS
        connected = self.ready.connected.is_set()
        timeout = SAFETY_RECHECK_SECONDS if connected else UNSIGNALLED_RECHECK_SECONDS
        not_before = self.queries.next_not_before(stage, now)
        if not_before is not None:
            timeout = min(timeout, max((not_before - now).total_seconds(), 0.001))
        return timeout
