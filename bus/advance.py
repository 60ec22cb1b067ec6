"""The bus: a tracked follower that turns each stage's end into the item's next step."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from eventsourcing.persistence import IntegrityError, Tracking

from domain.application import StateOwner
from domain.errors import ConcurrentUpdate, NotFound

log = structlog.get_logger(__name__)

TRIGGERS = frozenset({"StageCompleted", "StageFailed", "LeaseExpired"})
BUS_ACTOR = "system:bus"
DECISION_ATTEMPTS = 5


class Bus:
    """Decides after StageCompleted, StageFailed and LeaseExpired; the decision and the bus's
    position commit together, so a crash re-processes and never double-applies."""

    name = "bus"

    def __init__(self, app: StateOwner) -> None:
        self.app = app
        self.decisions = 0

    def position(self) -> int:
        return self.app.recorder.max_tracking_id(StateOwner.name) or 0

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        tracked = after
        for domain_event, position in batch:
            if type(domain_event).__name__ in TRIGGERS and self._decide(domain_event, position):
                tracked = position
        last = batch[-1][1]
        if last > tracked:
            with contextlib.suppress(IntegrityError):  # recorded already, by us or another bus
                self.app.recorder.insert_tracking(Tracking(StateOwner.name, last))

    def _decide(self, trigger: Any, position: int) -> bool:
        """Returns True when a decision (with tracking) was appended for this trigger."""
        for _ in range(DECISION_ATTEMPTS):
            try:
                appended = self.app.decide(
                    trigger.originator_id,
                    trigger.originator_version,
                    trigger,
                    tracking=Tracking(StateOwner.name, position),
                    actor=BUS_ACTOR,
                    caused_by=f"event:{position}",
                )
            except NotFound:
                return False
            except (IntegrityError, ConcurrentUpdate):
                if self.position() >= position:
                    return True  # another bus took this decision
                continue  # the item moved under us (a cancel, say): decide again on fresh state
            if appended is not None:
                self.decisions += 1
                log.debug(
                    "bus_decided",
                    item_id=str(trigger.originator_id),
                    trigger=type(trigger).__name__,
                )
                return True
            return False
        raise ConcurrentUpdate(f"could not decide on {type(trigger).__name__} at {position}")
