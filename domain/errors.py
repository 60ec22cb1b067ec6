"""Domain errors: each names a rule the domain refused to break. `api/` maps them to HTTP."""

from __future__ import annotations

from decimal import Decimal


class DomainError(Exception):
    """A command was refused by a domain rule."""


class NotFound(DomainError):
    """The named aggregate does not exist."""


class AlreadyExists(DomainError):
    """An aggregate with that identity exists already."""


class InvalidPipelineSpec(DomainError):
    """A pipeline spec breaks a structural rule."""


class InvalidCommand(DomainError):
    """A command's arguments make no sense for the aggregate (an unknown outcome, say)."""


class UnknownStage(InvalidCommand):
    """A command named a stage the item's pipeline (version) does not have."""

    field = "stage"


class StateConflict(DomainError):
    """The aggregate is not in a state that allows the command."""


class LeaseLost(DomainError):
    """The lease is expired, superseded or finished: its holder no longer owns the stage."""


class LeaseTimedOut(LeaseLost):
    """The lease's time ran out (as far as the command could see)."""


class RepeatedCompletion(DomainError):
    """The lease was already finished with exactly this report; the first answer stands."""

    def __init__(self, version: int) -> None:
        super().__init__(f"lease already finished at version {version}")
        self.version = version


class ReportMismatch(DomainError):
    """The lease was already finished with a different report."""


class ConcurrentUpdate(DomainError):
    """Another writer appended to the aggregate first; the command can be retried."""

    def __init__(self, detail: str = "another writer changed it first; try again") -> None:
        super().__init__(detail)


class NotLeaseHolder(DomainError):
    """The lease is held by another agent."""


class OutsideScope(DomainError):
    """The agent may not work on that stage."""


class BudgetHalted(DomainError):
    """A breaker over the work is open: its scope spent its halt limit in this window."""

    def __init__(self, scope: str, spent_usd: Decimal, halt_usd: Decimal, window: str) -> None:
        super().__init__(
            f"the breaker of {scope} is open: {spent_usd} USD spent today "
            f"of a {halt_usd} USD halt limit"
        )
        self.scope = scope
        self.spent_usd = spent_usd
        self.halt_usd = halt_usd
        self.window = window


class InvalidField(InvalidCommand):
    """A command's field breaks a rule; `field` names where (`cron`, `timezone`, …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidEvalCase(InvalidCommand):
    """An eval case breaks a rule: an unknown check kind, an invalid regex or JSON schema, an
    unknown stage. `location` names where (`cases[0].checks[1].value`)."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


class EvalGateRefused(DomainError):
    """A version's eval results do not meet the active version's eval gate."""
