"""The EvalRun aggregate: a reference set run against one pipeline version as eval items. Its
results are not stored here: they follow from its items (the evals projection)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from domain.evals import Case
from domain.recorded import Recorded, RecordedAggregate
from domain.values import By


def case_item_id(run_id: uuid.UUID, index: int) -> uuid.UUID:
    """A case's item derives from its run, so a run and its items are one unit."""
    return uuid.uuid5(run_id, f"case:{index}")


class EvalRun(RecordedAggregate):
    if TYPE_CHECKING:
        pipeline: str
        pipeline_version: int
        cases: list[dict[str, Any]]
        fingerprint: str

    class EvalRunStarted(Aggregate.Created, Recorded):
        pipeline: str
        pipeline_version: int
        topic: str
        cases: list[dict[str, Any]]  # each {name, input, checks, item_id}
        fingerprint: str

        def apply(self, run: EvalRun) -> None:
            run.pipeline = self.pipeline
            run.pipeline_version = self.pipeline_version
            run.cases = self.cases
            run.fingerprint = self.fingerprint

    @classmethod
    def start(
        cls,
        run_id: uuid.UUID,
        pipeline: str,
        version: int,
        topic: str,
        cases: tuple[Case, ...],
        fingerprint: str,
        by: By,
    ) -> EvalRun:
        return cls._begin(
            cls.EvalRunStarted,
            run_id,
            by,
            pipeline=pipeline,
            pipeline_version=version,
            topic=topic,
            cases=[
                {**case.to_dict(), "item_id": str(case_item_id(run_id, index))}
                for index, case in enumerate(cases)
            ],
            fingerprint=fingerprint,
        )

    def item_ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(case["item_id"]) for case in self.cases]
