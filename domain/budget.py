"""The Budget aggregate: a scope's daily spend limits, and its breaker's history per window."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from domain.errors import InvalidCommand, StateConflict
from domain.recorded import Recorded, RecordedAggregate
from domain.values import By, Limits

BUDGET_NAMESPACE = uuid.UUID("5a0e2c1d-8b7f-4e3a-9c6d-1f2e3d4c5b06")
SCOPE_PATTERN = re.compile(r"^(global|eval|(stage|agent|topic):[A-Za-z0-9_.:-]{1,100})$")


@dataclass(frozen=True)
class Scope:
    """Where spend is counted: everything, or one stage, agent or topic."""

    kind: str
    name: str | None

    def __str__(self) -> str:
        return self.kind if self.name is None else f"{self.kind}:{self.name}"


def parse_scope(text: str) -> Scope:
    if not SCOPE_PATTERN.match(text):
        raise InvalidCommand(
            f"scope {text!r} must be global, eval, stage:NAME, agent:NAME or topic:NAME"
        )
    kind, _, name = text.partition(":")
    return Scope(kind, name or None)


def scopes_of(stage: str, agent: str, topic: str) -> list[str]:
    """Every scope one unit of work's spend counts against."""
    return ["global", f"stage:{stage}", f"agent:{agent}", f"topic:{topic}"]


def check_limits(limits: Limits) -> None:
    if limits.alert_usd < 0 or limits.halt_usd <= 0:
        raise InvalidCommand("limits must be positive")
    if limits.alert_usd >= limits.halt_usd:
        raise InvalidCommand(
            f"alert_usd ({limits.alert_usd}) must be below halt_usd ({limits.halt_usd})"
        )


class BudgetEvent(Recorded):
    scope: str


class LimitsSet(BudgetEvent):
    alert_usd: Decimal
    halt_usd: Decimal

    def apply(self, budget: Budget) -> None:
        budget.alert_usd = self.alert_usd
        budget.halt_usd = self.halt_usd


class WindowEvent(BudgetEvent):
    """Something that happened to the breaker in one spend window (a UTC day)."""

    window: str


class Budget(RecordedAggregate):
    """A scope's daily spend limits, and its breaker's history per window."""

    if TYPE_CHECKING:
        scope: str
        alert_usd: Decimal
        halt_usd: Decimal
        alerted: list[str]
        opened: list[str]
        reset_windows: list[str]

    class BudgetDefined(Aggregate.Created, LimitsSet):
        def apply(self, budget: Budget) -> None:
            budget.scope = self.scope
            budget.alerted = []
            budget.opened = []
            budget.reset_windows = []
            super().apply(budget)

    class BudgetChanged(LimitsSet):
        pass

    class BudgetAlerted(WindowEvent):
        spent_usd: Decimal
        alert_usd: Decimal

        def apply(self, budget: Budget) -> None:
            budget.alerted.append(self.window)

    class BreakerOpened(WindowEvent):
        spent_usd: Decimal
        halt_usd: Decimal

        def apply(self, budget: Budget) -> None:
            budget.opened.append(self.window)

    class BreakerReset(WindowEvent):
        def apply(self, budget: Budget) -> None:
            budget.reset_windows.append(self.window)

    @staticmethod
    def create_id(scope: str) -> uuid.UUID:
        return uuid.uuid5(BUDGET_NAMESPACE, scope)

    @classmethod
    def define(cls, scope: str, limits: Limits, by: By) -> Budget:
        parse_scope(scope)
        check_limits(limits)
        return cls._begin(
            cls.BudgetDefined,
            cls.create_id(scope),
            by,
            scope=scope,
            alert_usd=limits.alert_usd,
            halt_usd=limits.halt_usd,
        )

    @property
    def limits(self) -> Limits:
        return Limits(self.alert_usd, self.halt_usd)

    def change_limits(self, limits: Limits, by: By) -> bool:
        """Record new limits; returns False (and records nothing) when nothing changed."""
        check_limits(limits)
        if limits == self.limits:
            return False
        self._note(Budget.BudgetChanged, by, alert_usd=limits.alert_usd, halt_usd=limits.halt_usd)
        return True

    def alert(self, window: str, spent_usd: Decimal, by: By) -> bool:
        """Record the alert crossing once per window; False when it is recorded already."""
        if window in self.alerted:
            return False
        self._note(
            Budget.BudgetAlerted, by, window=window, spent_usd=spent_usd, alert_usd=self.alert_usd
        )
        return True

    def open_breaker(self, window: str, spent_usd: Decimal, by: By) -> bool:
        """Open the breaker for the window; False when it opened already or was reset."""
        if window in self.opened or window in self.reset_windows:
            return False
        self._note(
            Budget.BreakerOpened, by, window=window, spent_usd=spent_usd, halt_usd=self.halt_usd
        )
        return True

    def reset(self, window: str, by: By) -> None:
        if window in self.reset_windows:
            raise StateConflict(f"the breaker of {self.scope} is reset for {window} already")
        self._note(Budget.BreakerReset, by, window=window)

    def _note(self, event_class: type[BudgetEvent], by: By, **fields: Any) -> None:
        """Record an event about this budget's scope."""
        self._record(event_class, by, scope=self.scope, **fields)
