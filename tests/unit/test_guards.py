"""Unit tests of the bus's pure decisions: loop_guard, retry_delay, after_completion, after_failure.

The visits/transitions/path bookkeeping an Item keeps is simulated here with plain dicts.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidPipelineSpec
from domain.guards import (
    Advance,
    Complete,
    Park,
    after_completion,
    after_failure,
    loop_guard,
    retry_delay,
)
from domain.pipeline import DONE_OUTCOME, PipelineSpec, known_outcomes, parse_spec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6)
OUTCOMES = NAMES.filter(lambda name: name != DONE_OUTCOME)


def _spec(raw_stages: list[dict[str, Any]], **limits: Any) -> PipelineSpec:
    return parse_spec({"stages": raw_stages, **limits})


REVIEW_LOOP = [{"name": "draft"}, {"name": "review", "on": {"revise": "draft"}}, {"name": "ship"}]


@st.composite
def routed_specs(draw: st.DrawFn) -> PipelineSpec:
    """A valid spec with arbitrary routes (back-edges and self-loops included) and small limits."""
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    stages = [
        {"name": name, "on": draw(st.dictionaries(OUTCOMES, st.sampled_from(names), max_size=3))}
        for name in names
    ]
    return _spec(
        stages,
        max_visits_per_stage=draw(st.integers(1, 4)),
        max_transitions=draw(st.integers(1, 12)),
    )


# -- loop_guard ---------------------------------------------------------------------------------


def test_loop_guard_allows_a_transition_within_limits() -> None:
    """Below both limits the guard has nothing to say."""
    spec = _spec(REVIEW_LOOP, max_visits_per_stage=2, max_transitions=5)
    assert loop_guard(spec, "draft", {"draft": 1, "review": 1}, 1, ["draft", "review"]) is None


def test_loop_guard_parks_a_visit_beyond_max_visits_per_stage() -> None:
    """The visit that would exceed max_visits_per_stage parks, naming stage, count and path."""
    spec = _spec(REVIEW_LOOP, max_visits_per_stage=2)
    decision = loop_guard(
        spec, "draft", {"draft": 2, "review": 2}, 3, ["draft", "review", "draft", "review"]
    )
    assert isinstance(decision, Park)
    assert decision.reason == "loop_guard"
    assert "stage 'draft' would be visited 3 times" in decision.detail
    assert "max_visits_per_stage 2" in decision.detail
    assert decision.detail.endswith("path: draft -> review -> draft -> review -> draft")


def test_loop_guard_allows_exactly_max_visits() -> None:
    """Reaching max_visits_per_stage is allowed; only going past it parks."""
    spec = _spec(REVIEW_LOOP, max_visits_per_stage=2)
    assert loop_guard(spec, "draft", {"draft": 1, "review": 1}, 1, ["draft", "review"]) is None


def test_loop_guard_parks_a_transition_beyond_max_transitions() -> None:
    """The transition that would exceed max_transitions parks, naming the count and the path."""
    spec = _spec(REVIEW_LOOP, max_visits_per_stage=10, max_transitions=3)
    decision = loop_guard(
        spec, "draft", {"draft": 2, "review": 2}, 3, ["draft", "review", "draft", "review"]
    )
    assert isinstance(decision, Park)
    assert decision.reason == "loop_guard"
    assert "transition 4 exceeds max_transitions 3" in decision.detail


def test_loop_guard_counts_an_unvisited_target_as_zero_visits() -> None:
    """A target missing from visits is a first visit, allowed even with max one visit."""
    spec = _spec(REVIEW_LOOP, max_visits_per_stage=1)
    assert loop_guard(spec, "review", {"draft": 1}, 0, ["draft"]) is None


# -- retry_delay --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (-3, 2.0)]
)
def test_retry_delay_is_the_base_then_doubles(attempt: int, seconds: float) -> None:
    """The first attempt waits the base; each later one doubles it; nonsense attempts the base."""
    assert retry_delay(2.0, attempt) == timedelta(seconds=seconds)


def test_retry_delay_with_zero_base_is_immediate() -> None:
    """A zero backoff never delays a retry."""
    assert retry_delay(0.0, 7) == timedelta(0)


@given(
    base=st.floats(0, 3600, allow_nan=False),
    attempt=st.integers(-2, 25),
    later=st.integers(0, 10),
)
def test_retry_delay_is_non_decreasing_in_attempt(base: float, attempt: int, later: int) -> None:
    """A later attempt never waits less than an earlier one."""
    assert retry_delay(base, attempt + later) >= retry_delay(base, attempt)


# -- after_completion ---------------------------------------------------------------------------


def test_after_completion_of_last_stage_completes_the_item() -> None:
    """Completing the last stage with no outcome finishes the item."""
    spec = _spec(REVIEW_LOOP)
    path = ["draft", "review", "ship"]
    visits = {"draft": 1, "review": 1, "ship": 1}
    assert after_completion(spec, "ship", None, visits, 2, path) == Complete()
    assert after_completion(spec, "ship", DONE_OUTCOME, visits, 2, path) == Complete()


def test_after_completion_advances_to_the_next_stage() -> None:
    """Completing a middle stage advances to the following one with reason advanced."""
    spec = _spec(REVIEW_LOOP)
    decision = after_completion(spec, "draft", None, {"draft": 1}, 0, ["draft"])
    assert decision == Advance("review", "advanced")
    assert isinstance(decision, Advance)
    assert decision.not_before is None


def test_after_completion_follows_a_routed_outcome() -> None:
    """A revise outcome on review advances back to draft."""
    spec = _spec(REVIEW_LOOP)
    decision = after_completion(
        spec, "review", "revise", {"draft": 1, "review": 1}, 1, ["draft", "review"]
    )
    assert decision == Advance("draft", "advanced")


def test_after_completion_parks_when_the_loop_guard_refuses() -> None:
    """A back-edge that would exceed max visits parks instead of advancing."""
    spec = _spec(REVIEW_LOOP, max_visits_per_stage=1)
    decision = after_completion(
        spec, "review", "revise", {"draft": 1, "review": 1}, 1, ["draft", "review"]
    )
    assert isinstance(decision, Park)
    assert decision.reason == "loop_guard"


def test_after_completion_refuses_an_unrouted_outcome() -> None:
    """An outcome the stage does not route is an error, not a silent advance."""
    with pytest.raises(InvalidPipelineSpec):
        after_completion(_spec(REVIEW_LOOP), "draft", "revise", {"draft": 1}, 0, ["draft"])


def test_after_completion_of_the_last_stage_completes_even_at_the_limits() -> None:
    """Finishing moves the item nowhere, so exhausted limits do not stop it completing."""
    spec = _spec(REVIEW_LOOP, max_visits_per_stage=1, max_transitions=2)
    visits = {"draft": 1, "review": 1, "ship": 1}
    assert after_completion(spec, "ship", None, visits, 2, ["draft", "review", "ship"]) == (
        Complete()
    )


@given(spec=routed_specs(), choices=st.lists(st.integers(0, 10), max_size=40))
def test_following_any_outcomes_never_exceeds_the_loop_limits(
    spec: PipelineSpec, choices: list[int]
) -> None:
    """Whatever outcomes agents report, no stage is visited and no item moved beyond the limits."""
    stage = spec.first_stage
    visits = {stage: 1}
    transitions = 0
    path = [stage]
    for choice in choices:
        outcomes = known_outcomes(spec, stage)
        outcome = outcomes[choice % len(outcomes)]
        decision = after_completion(spec, stage, outcome, visits, transitions, path)
        if not isinstance(decision, Advance):
            if isinstance(decision, Park):
                assert decision.reason == "loop_guard"
            break
        assert decision.reason == "advanced"
        # As Item.advance_to and its StageReady event do:
        stage = decision.stage
        visits[stage] = visits.get(stage, 0) + 1
        transitions += 1
        path.append(stage)
        assert visits[stage] <= spec.max_visits_per_stage
        assert transitions <= spec.max_transitions
    assert all(count <= spec.max_visits_per_stage for count in visits.values())
    assert transitions <= spec.max_transitions


@given(spec=routed_specs(), choices=st.lists(st.integers(0, 10), min_size=200, max_size=200))
def test_following_outcomes_always_ends_in_complete_or_park(
    spec: PipelineSpec, choices: list[int]
) -> None:
    """The limits bound every walk: long enough, any outcome sequence completes or parks."""
    stage = spec.first_stage
    visits = {stage: 1}
    path = [stage]
    for choice in choices:
        outcomes = known_outcomes(spec, stage)
        outcome = outcomes[choice % len(outcomes)]
        decision = after_completion(spec, stage, outcome, visits, len(path) - 1, path)
        if not isinstance(decision, Advance):
            return
        stage = decision.stage
        visits[stage] = visits.get(stage, 0) + 1
        path.append(stage)
    pytest.fail(f"still advancing after {len(choices)} completions: {path}")


# -- after_failure ------------------------------------------------------------------------------


@given(
    max_attempts=st.integers(1, 10),
    attempt=st.integers(1, 13),
    retryable=st.booleans(),
    backoff=st.floats(0, 600, allow_nan=False),
)
def test_after_failure_parks_exactly_when_attempts_are_used_up_or_not_retryable(
    max_attempts: int, attempt: int, retryable: bool, backoff: float
) -> None:
    """A failure parks iff it may not be retried or attempt >= max_attempts; else it retries."""
    spec = _spec(
        [{"name": "draft", "max_attempts": max_attempts, "retry_backoff_seconds": backoff}]
    )
    decision = after_failure(
        spec, "draft", attempt, retryable=retryable, error="boom", failed_at=NOW
    )
    should_park = not retryable or attempt >= max_attempts
    assert isinstance(decision, Park) == should_park
    if isinstance(decision, Park):
        assert decision.reason == ("failed" if not retryable else "retries_exhausted")
        assert "boom" in decision.detail
    else:
        assert decision == Advance("draft", "retry", not_before=NOW + retry_delay(backoff, attempt))


def test_after_failure_retry_waits_for_the_backoff() -> None:
    """The second failure of a stage with 10s backoff is retried 20s after it failed."""
    spec = _spec([{"name": "draft", "max_attempts": 5, "retry_backoff_seconds": 10}])
    decision = after_failure(spec, "draft", 2, retryable=True, error="rate limited", failed_at=NOW)
    assert decision == Advance("draft", "retry", not_before=NOW + timedelta(seconds=20))


def test_after_failure_names_attempts_in_the_exhausted_detail() -> None:
    """Running out of attempts says how many of how many failed, and the error."""
    spec = _spec([{"name": "draft", "max_attempts": 2}])
    decision = after_failure(spec, "draft", 2, retryable=True, error="boom", failed_at=NOW)
    assert isinstance(decision, Park)
    assert decision.detail == "stage 'draft' failed 2 of 2 attempts: boom"


def test_after_failure_not_retryable_parks_on_first_attempt() -> None:
    """A non-retryable failure parks at once even with attempts left."""
    spec = _spec([{"name": "draft", "max_attempts": 5}])
    decision = after_failure(spec, "draft", 1, retryable=False, error="bad input", failed_at=NOW)
    assert decision == Park(
        reason="failed", detail="stage 'draft' failed and may not be retried: bad input"
    )


def test_after_failure_decides_for_every_attempt_a_valid_spec_allows() -> None:
    """With max_attempts 50 (valid) and the default backoff, attempt 40 still gets a decision."""
    spec = _spec([{"name": "draft", "max_attempts": 50}])
    decision = after_failure(spec, "draft", 40, retryable=True, error="boom", failed_at=NOW)
    assert isinstance(decision, Advance)
