"""The Pipeline aggregate and its spec: the stages an item travels and the limits on the way."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from domain.errors import InvalidEvalCase, InvalidPipelineSpec
from domain.evals import EvalGate, parse_gate
from domain.recorded import Recorded, RecordedAggregate
from domain.values import By

PIPELINE_NAMESPACE = uuid.UUID("6f1c1b2e-3f57-4a55-9a0e-5a1f3e1f7a01")
DONE_OUTCOME = "done"

# A stage's fallback (`on_park`) and cap (`max_concurrent`), a spec's exit criteria and eval
# gate are optional and left out of a spec that has none, so specs stored before them read back
# the same.
STAGE_KEYS = {"name", "max_attempts", "lease_seconds", "retry_backoff_seconds", "on"}
STAGE_KEYS |= {"on_park", "max_concurrent"}
SPEC_KEYS = {"stages", "max_visits_per_stage", "max_transitions", "item_budget_usd"}
SPEC_KEYS |= {"exit_criteria", "eval_gate"}
# Each criterion, and whether its actual value must be at least (True) or at most the target.
EXIT_CRITERIA = {
    "items_per_day": True,
    "success_rate": True,
    "cost_per_item_usd": False,
    "p95_seconds": False,
    "quality_pass_rate": True,
}
MAX_CONCURRENT = 100_000


@dataclass(frozen=True)
class StageSpec:
    name: str
    max_attempts: int = 3
    lease_seconds: float = 300.0
    retry_backoff_seconds: float = 2.0
    on: Mapping[str, str] = field(default_factory=dict)
    max_concurrent: int | None = None
    on_park: str | None = None


@dataclass(frozen=True)
class PipelineSpec:
    stages: tuple[StageSpec, ...]
    max_visits_per_stage: int = 3
    max_transitions: int = 50
    item_budget_usd: float | None = None
    exit_criteria: Mapping[str, float] = field(default_factory=dict)
    eval_gate: EvalGate | None = None

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise InvalidPipelineSpec(f"no stage named {name!r}")

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    @property
    def first_stage(self) -> str:
        return self.stages[0].name

    def to_dict(self) -> dict[str, Any]:
        # A spec without a gate is stored as before the gate existed.
        gate = {} if self.eval_gate is None else {"eval_gate": self.eval_gate.to_dict()}
        return {
            "stages": [
                {
                    "name": s.name,
                    "max_attempts": s.max_attempts,
                    "lease_seconds": s.lease_seconds,
                    "retry_backoff_seconds": s.retry_backoff_seconds,
                    "on": dict(s.on),
                    **({"max_concurrent": s.max_concurrent} if s.max_concurrent else {}),
                    # Only when set, so specs stored before fallbacks existed read back the same.
                    **({"on_park": s.on_park} if s.on_park is not None else {}),
                }
                for s in self.stages
            ],
            "max_visits_per_stage": self.max_visits_per_stage,
            "max_transitions": self.max_transitions,
            "item_budget_usd": self.item_budget_usd,
            **({"exit_criteria": dict(self.exit_criteria)} if self.exit_criteria else {}),
            **gate,
        }


# Upper bounds keep every derived time and count representable, and catch unit mistakes.
MAX_ATTEMPTS = 100
MAX_LEASE_SECONDS = 7 * 24 * 3600
MAX_BACKOFF_SECONDS = 24 * 3600
MAX_VISITS = 1000
MAX_TRANSITIONS = 100_000
MAX_ITEM_BUDGET_USD = 1_000_000


def _number(value: Any, where: str, *, integer: bool, low: float, high: float, low_ok: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPipelineSpec(f"{where} must be a number, got {value!r}")
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one kind of number: 25.0 is the whole number 25
    if integer and not isinstance(value, int):
        raise InvalidPipelineSpec(f"{where} must be a whole number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidPipelineSpec(f"{where} must be finite, got {value!r}")
    if value < low or (value == low and not low_ok):
        kind = "positive" if not low_ok else "at least " + str(low)
        raise InvalidPipelineSpec(f"{where} must be {kind}, got {value!r}")
    if value > high:
        raise InvalidPipelineSpec(f"{where} must be at most {high}, got {value!r}")
    return value


def _positive_number(value: Any, where: str, *, high: float, integer: bool = False) -> Any:
    return _number(value, where, integer=integer, low=0, high=high, low_ok=False)


def _non_negative_number(value: Any, where: str, *, high: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise InvalidPipelineSpec(f"{where} must not be negative, got {value!r}")
    return float(_number(value, where, integer=False, low=0, high=high, low_ok=True))


def _stage(raw: Any, index: int) -> StageSpec:
    where = f"stages[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidPipelineSpec(f"{where} must be an object")
    unknown = set(raw) - STAGE_KEYS
    if unknown:
        raise InvalidPipelineSpec(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidPipelineSpec(f"{where}.name must be a non-empty string")
    if name != name.strip() or len(name) > 100:
        raise InvalidPipelineSpec(f"{where}.name {name!r} must be trimmed and at most 100 chars")
    on = raw.get("on", {})
    if not isinstance(on, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in on.items()
    ):
        raise InvalidPipelineSpec(f"{where}.on must map outcome names to stage names")
    if DONE_OUTCOME in on:
        raise InvalidPipelineSpec(f"{where}.on must not redefine the {DONE_OUTCOME!r} outcome")
    on_park = raw.get("on_park")
    if on_park is not None and (not isinstance(on_park, str) or on_park == name):
        raise InvalidPipelineSpec(f"{where}.on_park must name another stage, got {on_park!r}")
    return StageSpec(
        name=name,
        max_attempts=_positive_number(
            raw.get("max_attempts", 3), f"{where}.max_attempts", high=MAX_ATTEMPTS, integer=True
        ),
        lease_seconds=float(
            _positive_number(
                raw.get("lease_seconds", 300), f"{where}.lease_seconds", high=MAX_LEASE_SECONDS
            )
        ),
        retry_backoff_seconds=_non_negative_number(
            raw.get("retry_backoff_seconds", 2),
            f"{where}.retry_backoff_seconds",
            high=MAX_BACKOFF_SECONDS,
        ),
        on=dict(on),
        max_concurrent=None
        if raw.get("max_concurrent") is None
        else _positive_number(
            raw["max_concurrent"], f"{where}.max_concurrent", high=MAX_CONCURRENT, integer=True
        ),
        on_park=on_park,
    )


def _exit_criteria(raw: Any) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidPipelineSpec("exit_criteria must be an object")
    unknown = set(raw) - set(EXIT_CRITERIA)
    if unknown:
        raise InvalidPipelineSpec(
            f"exit_criteria has unknown keys: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(EXIT_CRITERIA)}"
        )
    criteria = {}
    for name, target in raw.items():
        high = 1.0 if name.endswith("_rate") else 1e12
        criteria[name] = _non_negative_number(target, f"exit_criteria.{name}", high=high)
    return criteria


def parse_spec(raw: Any) -> PipelineSpec:
    """Validate a spec as given by an operator and return it normalised, or name what is wrong."""
    if not isinstance(raw, Mapping):
        raise InvalidPipelineSpec("a pipeline spec must be an object")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise InvalidPipelineSpec(f"unknown keys: {', '.join(sorted(unknown))}")
    raw_stages = raw.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise InvalidPipelineSpec("stages must be a non-empty list: a pipeline needs a stage")
    stages = tuple(_stage(s, i) for i, s in enumerate(raw_stages))
    names = [s.name for s in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidPipelineSpec(f"duplicate stage names: {', '.join(duplicates)}")
    for stage in stages:
        for outcome, target in stage.on.items():
            if target not in names:
                raise InvalidPipelineSpec(
                    f"stage {stage.name!r} routes outcome {outcome!r} to unknown stage {target!r}"
                )
        if stage.on_park is not None and stage.on_park not in names:
            raise InvalidPipelineSpec(
                f"stage {stage.name!r} falls back (on_park) to unknown stage {stage.on_park!r}"
            )
    budget = raw.get("item_budget_usd")
    try:
        gate = None if raw.get("eval_gate") is None else parse_gate(raw["eval_gate"])
    except InvalidEvalCase as error:
        raise InvalidPipelineSpec(str(error)) from None
    return PipelineSpec(
        stages=stages,
        max_visits_per_stage=_positive_number(
            raw.get("max_visits_per_stage", 3),
            "max_visits_per_stage",
            high=MAX_VISITS,
            integer=True,
        ),
        max_transitions=_positive_number(
            raw.get("max_transitions", 50), "max_transitions", high=MAX_TRANSITIONS, integer=True
        ),
        item_budget_usd=None
        if budget is None
        else float(_positive_number(budget, "item_budget_usd", high=MAX_ITEM_BUDGET_USD)),
        exit_criteria=_exit_criteria(raw.get("exit_criteria")),
        eval_gate=gate,
    )


@dataclass(frozen=True)
class SpecLimits:
    """What a new spec may ask for. Stored specs are read without them: a log written under
    looser limits still loads."""

    max_stages: int = 100
    max_routes: int = 500
    max_bytes: int = 64 * 1024
    min_lease_seconds: float = 1.0
    max_lease_seconds: float = 24 * 3600.0


def accept_spec(raw: Any, limits: SpecLimits) -> PipelineSpec:
    """Validate a spec an operator puts, within the service's limits."""
    stages = raw.get("stages") if isinstance(raw, Mapping) else None
    if isinstance(stages, list) and len(stages) > limits.max_stages:
        raise InvalidPipelineSpec(f"stages has {len(stages)} stages; at most {limits.max_stages}")
    size = len(json.dumps(raw, default=str, separators=(",", ":")).encode())
    if size > limits.max_bytes:
        raise InvalidPipelineSpec(f"the spec is {size} bytes; at most {limits.max_bytes}")
    spec = parse_spec(raw)
    routes = sum(len(stage.on) for stage in spec.stages)
    if routes > limits.max_routes:
        raise InvalidPipelineSpec(
            f"the stages' on maps route {routes} outcomes; at most {limits.max_routes}"
        )
    for index, stage in enumerate(spec.stages):
        where = f"stages[{index}].lease_seconds"
        if stage.lease_seconds < limits.min_lease_seconds:
            raise InvalidPipelineSpec(
                f"{where} must be at least {limits.min_lease_seconds:g}, got {stage.lease_seconds!r}"
            )
        if stage.lease_seconds > limits.max_lease_seconds:
            raise InvalidPipelineSpec(
                f"{where} must be at most {limits.max_lease_seconds:g}, got {stage.lease_seconds!r}"
            )
    return spec


def next_stage(spec: PipelineSpec, stage: str, outcome: str | None) -> str | None:
    """The stage a completion leads to, or None when it completes the item."""
    current = spec.stage(stage)
    if outcome is not None and outcome != DONE_OUTCOME:
        if outcome not in current.on:
            raise InvalidPipelineSpec(f"stage {stage!r} has no route for outcome {outcome!r}")
        return current.on[outcome]
    names = spec.stage_names
    # A stage named as a fallback runs in a parked stage's place (or where an `on` route
    # sends the item), never by coming next in the list.
    fallbacks = {s.on_park for s in spec.stages if s.on_park is not None}
    following = [name for name in names[names.index(stage) + 1 :] if name not in fallbacks]
    return following[0] if following else None


def known_outcomes(spec: PipelineSpec, stage: str) -> list[str]:
    return [DONE_OUTCOME, *spec.stage(stage).on]


class Pipeline(RecordedAggregate):
    """A named, versioned spec. Each revision is a new version; items keep the one they began on."""

    if TYPE_CHECKING:
        name: str
        spec: dict[str, Any]

    class PipelineDefined(Aggregate.Created, Recorded):
        name: str
        spec: dict[str, Any]

        def apply(self, pipeline: Pipeline) -> None:
            pipeline.name = self.name
            pipeline.spec = self.spec

    class PipelineRevised(Recorded):
        spec: dict[str, Any]

        def apply(self, pipeline: Pipeline) -> None:
            pipeline.spec = self.spec

    @staticmethod
    def create_id(name: str) -> uuid.UUID:
        return uuid.uuid5(PIPELINE_NAMESPACE, name)

    @classmethod
    def define(cls, name: str, spec: PipelineSpec, by: By) -> Pipeline:
        return cls._begin(
            cls.PipelineDefined, cls.create_id(name), by, name=name, spec=spec.to_dict()
        )

    def revise(self, spec: PipelineSpec, by: By) -> None:
        self._record(Pipeline.PipelineRevised, by, spec=spec.to_dict())

    @property
    def parsed(self) -> PipelineSpec:
        return parse_spec(self.spec)
