"""The bus: a tracked follower that turns each stage's end into the item's next step."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from eventsourcing.persistence import IntegrityError, Tracking

from bus.governor import Governor
from domain.application import StateOwner
from domain.errors import ConcurrentUpdate, NotFound
from domain.item import Item

log = structlog.get_logger(__name__)

TRIGGERS = frozenset({"StageCompleted", "StageFailed", "LeaseExpired"})
BUS_ACTOR = "system:bus"
DECISION_ATTEMPTS = 5


class Bus:
    """Decides after StageCompleted, StageFailed and LeaseExpired; the decision and the bus's
    position commit together, so a crash re-processes and never double-applies."""

    name = "bus"

    def __init__(self, app: StateOwner, governor: Governor | None = None) -> None:
        self.app = app
        self.governor = governor

    def position(self) -> int:
        return self.app.recorder.max_tracking_id(StateOwner.name) or 0

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        triggers = [(e, p) for e, p in batch if type(e).__name__ in TRIGGERS]
        handled, tracked = (
            self._decide_together(triggers, after) if len(triggers) > 1 else (False, after)
        )
        if not handled:
            for domain_event, position in triggers:
                if self._decide(domain_event, position):
                    tracked = position
        last = batch[-1][1]
        if last > tracked:
            with contextlib.suppress(IntegrityError):  # recorded already, by us or another bus
                self.app.recorder.insert_tracking(Tracking(StateOwner.name, last))
        if self.governor is not None:
            self.governor.after_batch(batch)

    def _decide_together(self, triggers: list[tuple[Any, int]], after: int) -> tuple[bool, int]:
        """Under load, decide a batch's triggers in one transaction (one commit, not one each).
        Returns whether that handled them, and the position it tracked; when it could not, it
        has appended nothing and the caller decides one by one."""
        decided: dict[Any, Item] = {}
        for trigger, position in triggers:
            if trigger.originator_id in decided:
                return False, after  # two triggers of one item: decide them in order instead
            try:
                item = self.app.item(trigger.originator_id)
            except NotFound:
                continue
            if self.app.apply_decision(
                item,
                trigger.originator_version,
                trigger,
                actor=BUS_ACTOR,
                caused_by=f"event:{position}",
            ):
                decided[trigger.originator_id] = item
        if not decided:
            return True, after
        try:
            self.app.decide_together(
                list(decided.values()), tracking=Tracking(StateOwner.name, triggers[-1][1])
            )
        except IntegrityError:
            return False, after  # an item moved meanwhile, or another bus got there: one by one
        return True, triggers[-1][1]

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
                log.debug(
                    "bus_decided",
                    item_id=str(trigger.originator_id),
                    trigger=type(trigger).__name__,
                )
                return True
            return False
        raise ConcurrentUpdate(f"could not decide on {type(trigger).__name__} at {position}")
