"""Claims: how an agent is handed the next ready item at a stage, waiting (bounded) for one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from domain.application import StateOwner
from domain.errors import BudgetHalted, ConcurrentUpdate, NotFound, OutsideScope, StateConflict
from domain.guards import window_of
from domain.item import Item
from domain.values import By
from projections.queries import Queries
from projections.ready import ReadySignal, RecentClaims

CANDIDATES_PER_TRY = 8
SAFETY_RECHECK_SECONDS = 5.0
CONTENDED_RECHECK_SECONDS = 0.01

ClaimCounter = Callable[[str, str], None]


@dataclass(frozen=True)
class Claimed:
    """A lease on one stage of one item, and the item as the claim left it."""

    item: Item
    lease_id: str
    position: int


def _uncounted(stage: str, result: str) -> None:
    pass


@dataclass(frozen=True)
class Claims:
    """Candidates come from item_status; the item aggregate decides, so two claimers can never
    both hold one stage. A waiting claim wakes on ready hints (this process's writers, or any
    process's through NOTIFY), on a stage's retry time, or at a safety recheck."""

    app: StateOwner
    queries: Queries
    ready: ReadySignal
    recent: RecentClaims
    count: ClaimCounter = _uncounted

    def claim(
        self, agent: str, scope: frozenset[str], stage: str, wait_seconds: float, by: By
    ) -> Claimed | None:
        """The oldest ready item at `stage`, or None once `wait_seconds` pass without one."""
        if stage not in scope:
            self.count(stage, "forbidden")
            raise OutsideScope(
                f"stage {stage!r} is outside your scope ({', '.join(sorted(scope))})"
            )
        deadline = time.monotonic() + wait_seconds
        while True:
            halted_topics = self._check_breakers(agent, stage)
            seen = self.ready.generation(stage)
            claimed = self._try(agent, stage, by, halted_topics)
            if claimed is not None:
                self.count(stage, "claimed")
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.count(stage, "empty")
                return None
            self.ready.wait(stage, seen, self._next_wake(stage, remaining))

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
        return frozenset(halted_topics)

    def _try(self, agent: str, stage: str, by: By, halted_topics: frozenset[str]) -> Claimed | None:
        # An item a writer just made ready goes to one waiter before item_status shows it.
        while (hinted := self.ready.take_hint(stage)) is not None:
            claimed = self._claim_one(hinted, agent, stage, by, halted_topics)
            if claimed is not None:
                return claimed
        with self.queries.ready_candidates(
            stage, self.app.clock(), self.recent.current(), halted_topics, CANDIDATES_PER_TRY
        ) as candidates:
            for item_id in candidates:
                claimed = self._claim_one(item_id, agent, stage, by, halted_topics)
                if claimed is not None:
                    return claimed
        return None

    def _claim_one(
        self, item_id: uuid.UUID, agent: str, stage: str, by: By, halted_topics: frozenset[str]
    ) -> Claimed | None:
        try:
            item, lease_id, position = self.app.claim(item_id, stage, agent, by, halted_topics)
        except (StateConflict, ConcurrentUpdate, NotFound):
            return None  # another agent won it, or what we read is behind the item
        self.recent.add(item_id, item.version)
        return Claimed(item, lease_id, position)

    def _next_wake(self, stage: str, remaining: float) -> float:
        now = self.app.clock()
        if self.queries.any_ready(stage, now):
            # Ready rows exist but others hold them; if one of those claims fails, no NOTIFY comes.
            return min(remaining, CONTENDED_RECHECK_SECONDS)
        timeout = min(remaining, SAFETY_RECHECK_SECONDS)
        not_before = self.queries.next_not_before(stage, now)
        if not_before is not None:
            timeout = min(timeout, max((not_before - now).total_seconds(), 0.001))
        return timeout
