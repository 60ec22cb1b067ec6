"""Budgets, the breaker's state and item budgets: pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.budget import Budget, parse_scope, scopes_of
from domain.errors import InvalidCommand, StateConflict
from domain.guards import (
    Advance,
    Complete,
    Halt,
    Park,
    breaker_state,
    window_of,
    within_item_budget,
)
from domain.pipeline import parse_spec
from domain.values import By, Limits

pytestmark = pytest.mark.unit

money = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False)


OPS = By("operator:ops", "r")
GOVERNOR = By("system:governor", "s")


def _budget(alert: str = "1", halt: str = "2") -> Budget:
    return Budget.define("agent:bot", Limits(Decimal(alert), Decimal(halt)), OPS)


@pytest.mark.parametrize("scope", ["global", "stage:draft", "agent:writer-1", "topic:llm.costs"])
def test_well_formed_scopes_parse(scope: str) -> None:
    """global and kind:NAME scopes parse and print back as given."""
    assert str(parse_scope(scope)) == scope


@pytest.mark.parametrize(
    "scope", ["", "world", "stage:", "agent", "topic:a b", "user:x", "global:x"]
)
def test_malformed_scopes_are_refused(scope: str) -> None:
    """Anything but global, stage:, agent: or topic: with a name is refused."""
    with pytest.raises(InvalidCommand, match="scope"):
        parse_scope(scope)


def test_a_report_counts_against_four_scopes() -> None:
    """A unit of work's spend counts against everything, its stage, its agent and its topic."""
    assert scopes_of("draft", "bot", "t") == ["global", "stage:draft", "agent:bot", "topic:t"]


@pytest.mark.parametrize(("alert", "halt"), [("2", "1"), ("1", "1"), ("-1", "1"), ("0", "0")])
def test_alert_must_be_below_a_positive_halt(alert: str, halt: str) -> None:
    """alert < halt, halt > 0, alert >= 0, or the budget is refused."""
    with pytest.raises(InvalidCommand):
        _budget(alert, halt)


def test_an_alert_is_recorded_once_per_window() -> None:
    """The second alert in one window records nothing; a new window records again."""
    budget = _budget()
    assert budget.alert("2026-01-01", Decimal("1.5"), GOVERNOR)
    assert not budget.alert("2026-01-01", Decimal("1.7"), GOVERNOR)
    assert budget.alert("2026-01-02", Decimal("1.1"), GOVERNOR)
    assert [type(e).__name__ for e in budget.collect_events()].count("BudgetAlerted") == 2


def test_a_reset_window_does_not_open_again() -> None:
    """After an operator's reset, the breaker does not reopen in that window; it may the next day."""
    budget = _budget()
    budget.reset("2026-01-01", OPS)
    assert not budget.open_breaker("2026-01-01", Decimal(3), GOVERNOR)
    assert budget.open_breaker("2026-01-02", Decimal(3), GOVERNOR)
    with pytest.raises(StateConflict):
        budget.reset("2026-01-01", OPS)


def test_unchanged_limits_record_nothing() -> None:
    """Setting the limits a budget already has appends no event."""
    budget = _budget()
    budget.collect_events()
    assert not budget.change_limits(Limits(Decimal(1), Decimal(2)), OPS)
    assert budget.change_limits(Limits(Decimal(1), Decimal(5)), OPS)
    assert [type(e).__name__ for e in budget.collect_events()] == ["BudgetChanged"]


@given(spent=money, alert=money, extra=money, reset=st.booleans())
def test_breaker_state_follows_spend_against_the_levels(
    spent: Decimal, alert: Decimal, extra: Decimal, reset: bool
) -> None:
    """Halted exactly when spend reaches halt without a reset; alerting at or over alert otherwise."""
    halt = alert + extra + Decimal("0.01")
    state = breaker_state(spent, alert, halt, reset_this_window=reset)
    if spent >= halt and not reset:
        assert state == "halted"
    elif spent >= alert:
        assert state == "alerting"
    else:
        assert state == "ok"


def test_windows_are_utc_days() -> None:
    """A moment's window is its UTC date, whatever zone it is written in."""
    late_in_new_york = datetime(2026, 1, 1, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert window_of(late_in_new_york) == "2026-01-02"
    assert window_of(datetime(2026, 1, 1, 23, 59, tzinfo=UTC)) == "2026-01-01"


CAPPED = parse_spec({"stages": [{"name": "a"}, {"name": "b"}], "item_budget_usd": 1.0})


@pytest.mark.parametrize(
    ("cost", "decision", "halts"),
    [
        ("0.99", Advance("b", "advanced"), False),
        ("1.00", Advance("b", "advanced"), True),
        ("1.50", Complete(), True),
        ("5.00", Park("loop_guard", "x"), False),
    ],
)
def test_an_item_at_its_budget_halts_instead_of_moving_on(
    cost: str, decision: object, halts: bool
) -> None:
    """At or over item_budget_usd an advance or completion becomes a halt that remembers it."""
    guarded = within_item_budget(CAPPED, Decimal(cost), decision)  # type: ignore[arg-type]
    if halts:
        assert isinstance(guarded, Halt)
        assert guarded.reason == "budget"
        assert guarded.then == decision
    else:
        assert guarded == decision


def test_a_pipeline_without_an_item_budget_never_halts() -> None:
    """No item_budget_usd: any spend moves on."""
    spec = parse_spec({"stages": [{"name": "a"}]})
    assert within_item_budget(spec, Decimal(10**6), Complete()) == Complete()
