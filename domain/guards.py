"""Pure decisions the bus takes after a stage finishes: advance, retry, complete or park."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.pipeline import PipelineSpec, next_stage


@dataclass(frozen=True)
class Advance:
    stage: str
    reason: str
    not_before: datetime | None = None


@dataclass(frozen=True)
class Complete:
    pass


@dataclass(frozen=True)
class Park:
    reason: str
    detail: str


Decision = Advance | Complete | Park


def loop_guard(
    spec: PipelineSpec, target: str, visits: Mapping[str, int], transitions: int, path: list[str]
) -> Park | None:
    """Refuse a transition that would visit a stage or move the item more often than allowed."""
    if visits.get(target, 0) + 1 > spec.max_visits_per_stage:
        return Park(
            reason="loop_guard",
            detail=(
                f"stage {target!r} would be visited {visits.get(target, 0) + 1} times "
                f"(max_visits_per_stage {spec.max_visits_per_stage}); path: "
                + " -> ".join([*path, target])
            ),
        )
    if transitions + 1 > spec.max_transitions:
        return Park(
            reason="loop_guard",
            detail=(
                f"transition {transitions + 1} exceeds max_transitions {spec.max_transitions}; path: "
                + " -> ".join([*path, target])
            ),
        )
    return None


MAX_RETRY_DELAY_SECONDS = 24 * 3600


def retry_delay(base_seconds: float, attempt: int) -> timedelta:
    """Exponential backoff: the base after the first attempt, doubling after each further one,
    never more than a day."""
    doublings = min(max(attempt - 1, 0), 40)
    return timedelta(seconds=min(base_seconds * (2**doublings), MAX_RETRY_DELAY_SECONDS))


def after_completion(
    spec: PipelineSpec,
    stage: str,
    outcome: str | None,
    visits: Mapping[str, int],
    transitions: int,
    path: list[str],
) -> Decision:
    target = next_stage(spec, stage, outcome)
    if target is None:
        return Complete()
    return loop_guard(spec, target, visits, transitions, path) or Advance(target, "advanced")


def after_failure(
    spec: PipelineSpec,
    stage: str,
    attempt: int,
    *,
    retryable: bool,
    error: str,
    failed_at: datetime,
) -> Decision:
    """A failed or expired attempt is retried with backoff while attempts remain."""
    if not retryable:
        return Park(
            reason="failed", detail=f"stage {stage!r} failed and may not be retried: {error}"
        )
    stage_spec = spec.stage(stage)
    if attempt >= stage_spec.max_attempts:
        return Park(
            reason="retries_exhausted",
            detail=f"stage {stage!r} failed {attempt} of {stage_spec.max_attempts} attempts: {error}",
        )
    return Advance(
        stage,
        "retry",
        not_before=failed_at + retry_delay(stage_spec.retry_backoff_seconds, attempt),
    )


def fallback(
    spec: PipelineSpec,
    stage: str,
    visits: Mapping[str, int],
    transitions: int,
    path: list[str],
) -> Advance | None:
    """What runs in a parked stage's place: its `on_park` stage, made ready — unless it has
    none, or the loop guard would refuse that move too (then the item stays parked)."""
    target = spec.stage(stage).on_park
    if target is None or loop_guard(spec, target, visits, transitions, path) is not None:
        return None
    return Advance(target, "fallback")


def after_revocation(stage: str) -> Advance:
    """A revoked lease was no failure of the work: the stage is ready again at once, for an
    agent still allowed to do it, whatever attempts remain."""
    return Advance(stage, "retry")


@dataclass(frozen=True)
class Halt:
    """Stop the item for budget; `then` is what resuming it will do."""

    reason: str
    detail: str
    then: Advance | Complete


Step = Decision | Halt


def over_item_budget(spec: PipelineSpec, cost_usd: Decimal) -> bool:
    return spec.item_budget_usd is not None and cost_usd >= Decimal(str(spec.item_budget_usd))


def within_item_budget(
    spec: PipelineSpec, cost_usd: Decimal, decision: Decision
) -> Decision | Halt:
    """An item whose own spend reached its budget halts instead of going on."""
    if isinstance(decision, Park) or not over_item_budget(spec, cost_usd):
        return decision
    return Halt(
        reason="budget",
        detail=f"the item spent {cost_usd} USD of its {spec.item_budget_usd} USD budget",
        then=decision,
    )


def window_of(moment: datetime) -> str:
    """The spend window a moment falls in: its UTC day."""
    return moment.astimezone(UTC).date().isoformat()


def breaker_state(
    spent_usd: Decimal, alert_usd: Decimal, halt_usd: Decimal, *, reset_this_window: bool
) -> str:
    """ok, alerting or halted: halted while spend is at or over the halt limit, unless an
    operator reset the breaker for this window; raising the limit or a new window closes it."""
    if spent_usd >= halt_usd and not reset_this_window:
        return "halted"
    if spent_usd >= alert_usd:
        return "alerting"
    return "ok"
