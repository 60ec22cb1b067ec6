"""The Budget aggregate: a scope's daily spend limits, and its breaker's history per window."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import Decimal

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidCommand, StateConflict

BUDGET_NAMESPACE = uuid.UUID("5a0e2c1d-8b7f-4e3a-9c6d-1f2e3d4c5b06")
SCOPE_PATTERN = re.compile(r"^(global|(stage|agent|topic):[A-Za-z0-9_.:-]{1,100})$")


@dataclass(frozen=True)
class Scope:
    """Where spend is counted: everything, or one stage, agent or topic."""

    kind: str
    name: str | None

    def __str__(self) -> str:
        return self.kind if self.name is None else f"{self.kind}:{self.name}"


def parse_scope(text: str) -> Scope:
    if not SCOPE_PATTERN.match(text):
        raise InvalidCommand(f"scope {text!r} must be global, stage:NAME, agent:NAME or topic:NAME")
    kind, _, name = text.partition(":")
    return Scope(kind, name or None)


def scopes_of(stage: str, agent: str, topic: str) -> list[str]:
    """Every scope one unit of work's spend counts against."""
    return ["global", f"stage:{stage}", f"agent:{agent}", f"topic:{topic}"]


def check_limits(alert_usd: Decimal, halt_usd: Decimal) -> None:
    if alert_usd < 0 or halt_usd <= 0:
        raise InvalidCommand("limits must be positive")
    if alert_usd >= halt_usd:
        raise InvalidCommand(f"alert_usd ({alert_usd}) must be below halt_usd ({halt_usd})")


class Budget(Aggregate):
    @staticmethod
    def create_id(scope: str) -> uuid.UUID:
        return uuid.uuid5(BUDGET_NAMESPACE, scope)

    @event("BudgetDefined")
    def __init__(
        self, scope: str, alert_usd: Decimal, halt_usd: Decimal, actor: str, caused_by: str
    ) -> None:
        parse_scope(scope)
        check_limits(alert_usd, halt_usd)
        self.scope = scope
        self.alert_usd = alert_usd
        self.halt_usd = halt_usd
        self.alerted: list[str] = []
        self.opened: list[str] = []
        self.reset_windows: list[str] = []

    def change_limits(
        self, *, alert_usd: Decimal, halt_usd: Decimal, actor: str, caused_by: str
    ) -> bool:
        check_limits(alert_usd, halt_usd)
        if (alert_usd, halt_usd) == (self.alert_usd, self.halt_usd):
            return False
        self._limits_changed(
            scope=self.scope,
            alert_usd=alert_usd,
            halt_usd=halt_usd,
            actor=actor,
            caused_by=caused_by,
        )
        return True

    def alert(self, *, window: str, spent_usd: Decimal, actor: str, caused_by: str) -> bool:
        """Record the alert crossing once per window; False when it is recorded already."""
        if window in self.alerted:
            return False
        self._alerted(
            scope=self.scope,
            window=window,
            spent_usd=spent_usd,
            alert_usd=self.alert_usd,
            actor=actor,
            caused_by=caused_by,
        )
        return True

    def open_breaker(self, *, window: str, spent_usd: Decimal, actor: str, caused_by: str) -> bool:
        """Open the breaker for the window; False when it opened already or was reset."""
        if window in self.opened or window in self.reset_windows:
            return False
        self._opened(
            scope=self.scope,
            window=window,
            spent_usd=spent_usd,
            halt_usd=self.halt_usd,
            actor=actor,
            caused_by=caused_by,
        )
        return True

    def reset(self, *, window: str, actor: str, caused_by: str) -> None:
        if window in self.reset_windows:
            raise StateConflict(f"the breaker of {self.scope} is reset for {window} already")
        self._reset(scope=self.scope, window=window, actor=actor, caused_by=caused_by)

    @event("BudgetChanged")
    def _limits_changed(
        self, scope: str, alert_usd: Decimal, halt_usd: Decimal, actor: str, caused_by: str
    ) -> None:
        self.alert_usd = alert_usd
        self.halt_usd = halt_usd

    @event("BudgetAlerted")
    def _alerted(
        self,
        scope: str,
        window: str,
        spent_usd: Decimal,
        alert_usd: Decimal,
        actor: str,
        caused_by: str,
    ) -> None:
        self.alerted.append(window)

    @event("BreakerOpened")
    def _opened(
        self,
        scope: str,
        window: str,
        spent_usd: Decimal,
        halt_usd: Decimal,
        actor: str,
        caused_by: str,
    ) -> None:
        self.opened.append(window)

    @event("BreakerReset")
    def _reset(self, scope: str, window: str, actor: str, caused_by: str) -> None:
        self.reset_windows.append(window)
