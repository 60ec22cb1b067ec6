"""Unit tests of the pipeline spec (parse_spec, next_stage, known_outcomes) and its aggregate.

Pure: specs are plain dicts, the aggregate lives in memory only.
"""

from __future__ import annotations

import json
import string
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidPipelineSpec
from domain.pipeline import (
    DONE_OUTCOME,
    Pipeline,
    PipelineSpec,
    StageSpec,
    known_outcomes,
    next_stage,
    parse_spec,
)
from domain.values import By

pytestmark = pytest.mark.unit

NAMES = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)
OUTCOMES = NAMES.filter(lambda name: name != DONE_OUTCOME)


@st.composite
def raw_specs(draw: st.DrawFn, *, routes: bool = True) -> dict[str, Any]:
    """A valid spec as an operator would write it, with some optional keys left out."""
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    stages: list[dict[str, Any]] = []
    for name in names:
        stage: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            stage["max_attempts"] = draw(st.integers(1, 10))
        if draw(st.booleans()):
            stage["lease_seconds"] = draw(
                st.integers(1, 3600) | st.floats(0.5, 3600, allow_nan=False)
            )
        if draw(st.booleans()):
            stage["retry_backoff_seconds"] = draw(st.integers(0, 60) | st.floats(0, 60))
        if routes and draw(st.booleans()):
            stage["on"] = draw(st.dictionaries(OUTCOMES, st.sampled_from(names), max_size=3))
        stages.append(stage)
    spec: dict[str, Any] = {"stages": stages}
    if draw(st.booleans()):
        spec["max_visits_per_stage"] = draw(st.integers(1, 10))
    if draw(st.booleans()):
        spec["max_transitions"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        spec["item_budget_usd"] = draw(
            st.none() | st.integers(1, 100) | st.floats(0.01, 1000, allow_nan=False)
        )
    return spec


def _linear(*names: str) -> PipelineSpec:
    return parse_spec({"stages": [{"name": name} for name in names]})


def _valid_stage(**overrides: Any) -> dict[str, Any]:
    return {"stages": [{"name": "draft", **overrides}]}


# -- parse_spec: what a valid spec becomes -------------------------------------------------------


def test_parse_spec_fills_in_documented_defaults() -> None:
    """A spec naming only its stages gets the default attempts, lease, backoff and limits."""
    spec = parse_spec({"stages": [{"name": "draft"}]})
    assert spec == PipelineSpec(
        stages=(
            StageSpec(name="draft", max_attempts=3, lease_seconds=300.0, retry_backoff_seconds=2.0),
        ),
        max_visits_per_stage=3,
        max_transitions=50,
        item_budget_usd=None,
    )


def test_parse_spec_normalises_numbers_to_floats_where_fractions_are_allowed() -> None:
    """Integer lease, backoff and budget are stored as floats; integer limits stay integers."""
    spec = parse_spec(
        {
            "stages": [{"name": "draft", "lease_seconds": 60, "retry_backoff_seconds": 0}],
            "item_budget_usd": 5,
        }
    )
    stage = spec.stage("draft")
    assert type(stage.lease_seconds) is float
    assert type(stage.retry_backoff_seconds) is float
    assert type(spec.item_budget_usd) is float
    assert type(stage.max_attempts) is int
    assert (stage.lease_seconds, stage.retry_backoff_seconds, spec.item_budget_usd) == (
        60.0,
        0.0,
        5.0,
    )


def test_parse_spec_accepts_zero_backoff() -> None:
    """A backoff of zero means retry at once and is valid, unlike a zero lease."""
    assert (
        parse_spec(_valid_stage(retry_backoff_seconds=0)).stage("draft").retry_backoff_seconds == 0
    )


@given(raw_specs())
def test_parse_spec_round_trips_through_to_dict(raw: dict[str, Any]) -> None:
    """Parsing a parsed spec's dict gives back the very same spec."""
    spec = parse_spec(raw)
    assert parse_spec(spec.to_dict()) == spec


@given(raw_specs())
def test_to_dict_is_plain_json_that_parses_to_the_same_spec(raw: dict[str, Any]) -> None:
    """A spec's dict survives JSON encoding, as it must to be stored in an event."""
    spec = parse_spec(raw)
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec


@given(raw_specs())
def test_parse_spec_keeps_stage_order_and_routes(raw: dict[str, Any]) -> None:
    """Stages keep the order given and each stage keeps exactly the routes it was given."""
    spec = parse_spec(raw)
    assert spec.stage_names == [stage["name"] for stage in raw["stages"]]
    assert spec.first_stage == raw["stages"][0]["name"]
    for stage in raw["stages"]:
        assert dict(spec.stage(stage["name"]).on) == stage.get("on", {})


# -- parse_spec: what it refuses, and how it says so ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(["draft"], "must be an object", id="spec-not-an-object"),
        pytest.param({}, "stages must be a non-empty list", id="no-stages"),
        pytest.param({"stages": []}, "stages must be a non-empty list", id="empty-stages"),
        pytest.param({"stages": "draft"}, "stages must be a non-empty list", id="stages-not-list"),
        pytest.param({"stages": ["draft"]}, "stages[0] must be an object", id="stage-not-object"),
        pytest.param(
            {"stages": [{"name": "draft"}], "colour": "red"},
            "unknown keys: colour",
            id="unknown-spec-key",
        ),
        pytest.param(
            _valid_stage(colour="red", size=1),
            "stages[0] has unknown keys: colour, size",
            id="unknown-stage-keys",
        ),
        pytest.param({"stages": [{}]}, "stages[0].name must be a non-empty string", id="no-name"),
        pytest.param(
            {"stages": [{"name": "  "}]},
            "stages[0].name must be a non-empty string",
            id="blank-name",
        ),
        pytest.param(
            {"stages": [{"name": 7}]}, "stages[0].name must be a non-empty string", id="int-name"
        ),
        pytest.param({"stages": [{"name": " draft"}]}, "must be trimmed", id="untrimmed-name"),
        pytest.param({"stages": [{"name": "d" * 101}]}, "at most 100 chars", id="overlong-name"),
        pytest.param(
            {"stages": [{"name": "draft"}, {"name": "review"}, {"name": "draft"}]},
            "duplicate stage names: draft",
            id="duplicate-names",
        ),
        pytest.param(
            _valid_stage(on={"revise": "nowhere"}),
            "stage 'draft' routes outcome 'revise' to unknown stage 'nowhere'",
            id="unknown-target",
        ),
        pytest.param(
            _valid_stage(on={"done": "draft"}),
            "must not redefine the 'done' outcome",
            id="redefines-done",
        ),
        pytest.param(
            _valid_stage(on=["draft"]), "stages[0].on must map outcome names", id="on-not-mapping"
        ),
        pytest.param(
            _valid_stage(on={"": "draft"}),
            "stages[0].on must map outcome names",
            id="empty-outcome",
        ),
        pytest.param(
            _valid_stage(on={"revise": 1}),
            "stages[0].on must map outcome names",
            id="non-string-target",
        ),
        pytest.param(
            _valid_stage(max_attempts=0),
            "stages[0].max_attempts must be positive, got 0",
            id="zero-attempts",
        ),
        pytest.param(
            _valid_stage(max_attempts=2.5),
            "stages[0].max_attempts must be a whole number, got 2.5",
            id="fractional-attempts",
        ),
        pytest.param(
            _valid_stage(max_attempts="3"),
            "stages[0].max_attempts must be a number, got '3'",
            id="string-attempts",
        ),
        pytest.param(
            _valid_stage(max_attempts=True),
            "stages[0].max_attempts must be a number, got True",
            id="bool-attempts",
        ),
        pytest.param(
            _valid_stage(lease_seconds=-1),
            "stages[0].lease_seconds must be positive, got -1",
            id="negative-lease",
        ),
        pytest.param(
            _valid_stage(lease_seconds=0), "stages[0].lease_seconds must be positive", id="no-lease"
        ),
        pytest.param(
            _valid_stage(lease_seconds=float("inf")),
            "stages[0].lease_seconds must be finite",
            id="infinite-lease",
        ),
        pytest.param(
            _valid_stage(lease_seconds=float("nan")),
            "stages[0].lease_seconds must be finite",
            id="nan-lease",
        ),
        pytest.param(
            _valid_stage(lease_seconds=False),
            "stages[0].lease_seconds must be a number, got False",
            id="bool-lease",
        ),
        pytest.param(
            _valid_stage(retry_backoff_seconds=-0.5),
            "stages[0].retry_backoff_seconds must not be negative, got -0.5",
            id="negative-backoff",
        ),
        pytest.param(
            _valid_stage(retry_backoff_seconds=True),
            "stages[0].retry_backoff_seconds must be a number, got True",
            id="bool-backoff",
        ),
        pytest.param(
            {"stages": [{"name": "draft"}], "max_visits_per_stage": 0},
            "max_visits_per_stage must be positive, got 0",
            id="zero-visits",
        ),
        pytest.param(
            {"stages": [{"name": "draft"}], "max_transitions": 0},
            "max_transitions must be positive, got 0",
            id="zero-transitions",
        ),
        pytest.param(
            {"stages": [{"name": "draft"}], "max_transitions": True},
            "max_transitions must be a number, got True",
            id="bool-transitions",
        ),
        pytest.param(
            {"stages": [{"name": "draft"}], "max_visits_per_stage": 1.5},
            "max_visits_per_stage must be a whole number",
            id="fractional-visits",
        ),
        pytest.param(
            {"stages": [{"name": "draft"}], "item_budget_usd": 0},
            "item_budget_usd must be positive, got 0",
            id="zero-budget",
        ),
        pytest.param(
            {"stages": [{"name": "draft"}], "item_budget_usd": True},
            "item_budget_usd must be a number, got True",
            id="bool-budget",
        ),
    ],
)
def test_parse_spec_rejects_invalid_spec_naming_the_problem(raw: Any, message: str) -> None:
    """Each structural mistake is refused with InvalidPipelineSpec whose message names it."""
    with pytest.raises(InvalidPipelineSpec) as refused:
        parse_spec(raw)
    assert message in str(refused.value)


@given(
    key=st.sampled_from(["max_visits_per_stage", "max_transitions", "item_budget_usd"]),
    value=st.integers(max_value=0) | st.floats(max_value=0, allow_nan=False),
)
def test_parse_spec_rejects_any_non_positive_spec_limit(key: str, value: float) -> None:
    """No zero or negative value is accepted for a spec-wide limit."""
    with pytest.raises(InvalidPipelineSpec, match=key):
        parse_spec({"stages": [{"name": "draft"}], key: value})


@given(
    key=st.sampled_from(["max_attempts", "lease_seconds"]),
    value=st.integers(max_value=0),
)
def test_parse_spec_rejects_any_non_positive_stage_limit(key: str, value: int) -> None:
    """No zero or negative value is accepted for a stage's attempts or lease."""
    with pytest.raises(InvalidPipelineSpec, match=rf"stages\[0\]\.{key} must be positive"):
        parse_spec(_valid_stage(**{key: value}))


def test_parse_spec_rejects_a_huge_integer_limit_as_invalid() -> None:
    """An integer too large for a float (JSON allows one) is refused as an invalid spec."""
    with pytest.raises(InvalidPipelineSpec):
        parse_spec(_valid_stage(max_attempts=10**400))


# -- PipelineSpec lookups ---------------------------------------------------------------------


def test_stage_lookup_of_unknown_stage_names_it() -> None:
    """Asking a spec for a stage it lacks raises InvalidPipelineSpec naming the stage."""
    with pytest.raises(InvalidPipelineSpec, match="no stage named 'publish'"):
        _linear("draft", "review").stage("publish")


# -- next_stage and known_outcomes --------------------------------------------------------------


@given(st.lists(NAMES, min_size=1, max_size=8, unique=True))
def test_next_stage_on_linear_pipeline_is_the_following_stage_or_none(names: list[str]) -> None:
    """Without routes, completing a stage leads to the next one, and the last one to None."""
    spec = _linear(*names)
    for index, name in enumerate(names):
        expected = names[index + 1] if index + 1 < len(names) else None
        assert next_stage(spec, name, None) == expected
        assert next_stage(spec, name, DONE_OUTCOME) == expected


@given(raw_specs())
def test_next_stage_follows_every_declared_route(raw: dict[str, Any]) -> None:
    """A routed outcome leads to exactly the stage its route names."""
    spec = parse_spec(raw)
    for stage in spec.stages:
        for outcome, target in stage.on.items():
            assert next_stage(spec, stage.name, outcome) == target


@given(raw_specs())
def test_next_stage_with_done_ignores_routes(raw: dict[str, Any]) -> None:
    """The 'done' outcome always goes down the line, whatever routes a stage has."""
    spec = parse_spec(raw)
    names = spec.stage_names
    for index, name in enumerate(names):
        expected = names[index + 1] if index + 1 < len(names) else None
        assert next_stage(spec, name, DONE_OUTCOME) == expected


def test_next_stage_follows_a_back_edge() -> None:
    """A revise outcome on review leads back to draft rather than onward."""
    spec = parse_spec(
        {
            "stages": [
                {"name": "draft"},
                {"name": "review", "on": {"revise": "draft"}},
                {"name": "ship"},
            ]
        }
    )
    assert next_stage(spec, "review", "revise") == "draft"
    assert next_stage(spec, "review", None) == "ship"


def test_next_stage_refuses_an_outcome_the_stage_does_not_route() -> None:
    """An outcome with no route from the stage is refused, naming stage and outcome."""
    spec = parse_spec(
        {"stages": [{"name": "draft"}, {"name": "review", "on": {"revise": "draft"}}]}
    )
    with pytest.raises(
        InvalidPipelineSpec, match="stage 'draft' has no route for outcome 'revise'"
    ):
        next_stage(spec, "draft", "revise")


def test_next_stage_refuses_an_unknown_stage() -> None:
    """Asking where an unknown stage leads is refused rather than guessed."""
    with pytest.raises(InvalidPipelineSpec, match="no stage named 'ship'"):
        next_stage(_linear("draft"), "ship", None)


@given(raw_specs())
def test_known_outcomes_are_done_then_the_stage_routes(raw: dict[str, Any]) -> None:
    """A stage knows 'done' first, then each routed outcome once, and nothing else."""
    spec = parse_spec(raw)
    for stage in spec.stages:
        outcomes = known_outcomes(spec, stage.name)
        assert outcomes[0] == DONE_OUTCOME
        assert outcomes[1:] == list(stage.on)
        assert len(set(outcomes)) == len(outcomes)


# -- the Pipeline aggregate ---------------------------------------------------------------------


def test_pipeline_id_is_deterministic_by_name() -> None:
    """The same name always gives the same id, and different names different ids."""
    assert Pipeline.create_id("articles") == Pipeline.create_id("articles")
    assert Pipeline.create_id("articles") != Pipeline.create_id("reviews")
    assert isinstance(Pipeline.create_id("articles"), uuid.UUID)


def test_pipeline_definition_and_revision_are_recorded_as_events() -> None:
    """Defining then revising a pipeline records PipelineDefined then PipelineRevised."""
    first = _linear("draft").to_dict()
    second = _linear("draft", "review").to_dict()
    pipeline = Pipeline.define("articles", parse_spec(first), By("admin:builtin", "req-1"))
    pipeline.revise(parse_spec(second), By("operator:ops", "req-2"))
    events = pipeline.collect_events()
    assert [type(e).__name__ for e in events] == ["PipelineDefined", "PipelineRevised"]
    defined, revised = events
    assert (defined.name, defined.spec, defined.actor, defined.caused_by) == (
        "articles",
        first,
        "admin:builtin",
        "req-1",
    )
    assert revised.spec == second
    assert pipeline.version == 2
    assert pipeline.parsed.stage_names == ["draft", "review"]


def test_pipeline_parsed_validates_its_stored_spec() -> None:
    """A pipeline whose stored spec is broken refuses to hand out a parsed spec."""
    pipeline = Pipeline.define("broken", _linear("draft"), By("admin:builtin", "req-1"))
    pipeline.spec = {"stages": []}  # as a log written by hand, or by a laxer release, could hold
    with pytest.raises(InvalidPipelineSpec):
        _ = pipeline.parsed


def test_a_whole_number_written_with_a_point_is_that_number() -> None:
    """JSON has one kind of number (JSON Schema's integer takes 3.0): 3.0 attempts are 3."""
    spec = parse_spec({**_valid_stage(max_attempts=3.0), "max_visits_per_stage": 2.0})
    assert spec.stages[0].max_attempts == 3
    assert isinstance(spec.stages[0].max_attempts, int)
    assert spec.max_visits_per_stage == 2
