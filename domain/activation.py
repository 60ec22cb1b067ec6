"""The Activation aggregate: which version of a pipeline new items start on, and how each
version came to be active (at once, through its eval gate, or forced by an admin)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from domain.errors import StateConflict
from domain.evals import EvalGate, RunSummary, check_gate
from domain.recorded import Recorded, RecordedAggregate
from domain.values import By

ACTIVATION_NAMESPACE = uuid.UUID("0b7e4f52-6a1d-4c39-8e2f-7d5a9c3b1e08")
AT_ONCE = "at_once"
GATE = "eval_gate"
FORCED = "forced"


def _evidence(summary: RunSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "run_id": summary.run_id,
        "version": summary.version,
        "pass_rate": summary.pass_rate,
        "cost_per_item_usd": summary.cost_per_item_usd,
    }


class Activation(RecordedAggregate):
    """Kept apart from the Pipeline, whose versions are its own: activating a version is no
    revision of the spec. A pipeline without one (a log written before) runs its latest version."""

    if TYPE_CHECKING:
        pipeline: str
        active_version: int | None

    class ActivationBegan(Aggregate.Created, Recorded):
        pipeline: str

        def apply(self, activation: Activation) -> None:
            activation.pipeline = self.pipeline
            activation.active_version = None

    class VersionActivated(Recorded):
        version: int
        previous: int | None
        how: str  # at_once, eval_gate or forced
        candidate_run: dict[str, Any] | None
        active_run: dict[str, Any] | None

        def apply(self, activation: Activation) -> None:
            activation.active_version = self.version

    @staticmethod
    def create_id(pipeline: str) -> uuid.UUID:
        return uuid.uuid5(ACTIVATION_NAMESPACE, pipeline)

    @classmethod
    def begin(cls, pipeline: str, by: By) -> Activation:
        return cls._begin(cls.ActivationBegan, cls.create_id(pipeline), by, pipeline=pipeline)

    def activate_at_once(self, version: int, previous: int | None, by: By) -> None:
        """A version that needs no gate (the active version has none) is active now."""
        self._activated(version, previous, AT_ONCE, by, None, None)

    def activate(
        self,
        version: int,
        current: int,
        gate: EvalGate | None,
        candidate: RunSummary | None,
        active: RunSummary | None,
        *,
        force: bool,
        by: By,
    ) -> bool:
        """Activate a version if the active version's gate lets it (or an admin forces it);
        False when it is active already. `current` is the version active now (a pipeline
        without activations runs its latest)."""
        if version == current:
            return False
        if gate is None:
            self._activated(version, current, AT_ONCE, by, candidate, active)
        elif force:
            self._activated(version, current, FORCED, by, candidate, active)
        else:
            check_gate(gate, candidate, active)
            self._activated(version, current, GATE, by, candidate, active)
        return True

    def _activated(
        self,
        version: int,
        previous: int | None,
        how: str,
        by: By,
        candidate: RunSummary | None,
        active: RunSummary | None,
    ) -> None:
        if version < 1:
            raise StateConflict(f"there is no version {version}")
        self._record(
            Activation.VersionActivated,
            by,
            version=version,
            previous=previous,
            how=how,
            candidate_run=_evidence(candidate),
            active_run=_evidence(active),
        )
