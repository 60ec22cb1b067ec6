"""The bus: a tracked follower that turns each stage's end into the item's next step."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from eventsourcing.persistence import IntegrityError, Tracking

from bus.governor import Governor
from domain.application import StateOwner
from domain.errors import ConcurrentUpdate
from domain.item import DECIDER, Item, LeaseEnded
from domain.values import By

log = structlog.get_logger(__name__)

BUS_ACTOR = DECIDER
DECISIONS = (Item.StageReady, Item.ItemCompleted, Item.ItemParked, Item.ItemHalted)
DECISION_ATTEMPTS = 5


def decided_by(position: int) -> By:
    """A decision's cause is the position of the event it answers."""
    return By(BUS_ACTOR, f"event:{position}")


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
        # A trigger whose decision follows it in the batch was decided in its own append.
        answered = {
            (e.originator_id, e.originator_version - 1)
            for e, _ in batch
            if isinstance(e, DECISIONS)
        }
        triggers = [
            (e, p)
            for e, p in batch
            if isinstance(e, LeaseEnded) and (e.originator_id, e.originator_version) not in answered
        ]
        tracked = after
        if len(triggers) > 1 and self._decide_together(triggers):
            tracked = triggers[-1][1]
        else:
            for trigger, position in triggers:
                if self._decide(trigger, position):
                    tracked = position
        last = batch[-1][1]
        if last > tracked:
            with contextlib.suppress(IntegrityError):  # recorded already, by us or another bus
                self.app.recorder.insert_tracking(Tracking(StateOwner.name, last))
        if self.governor is not None:
            self.governor.after_batch(batch)

    def _decide_together(self, triggers: list[tuple[LeaseEnded, int]]) -> bool:
        """Under load, decide a batch's triggers in one transaction (one commit, not one each).
        Returns whether that handled them; when it could not, it has appended nothing and the
        caller decides one by one."""
        if len({trigger.originator_id for trigger, _ in triggers}) < len(triggers):
            return False  # two triggers of one item: decide them in order instead
        try:
            self.app.decide(
                [(trigger, decided_by(position)) for trigger, position in triggers],
                Tracking(StateOwner.name, triggers[-1][1]),
            )
        except ConcurrentUpdate:
            return False  # an item moved meanwhile, or another bus got there: one by one
        return True

    def _decide(self, trigger: LeaseEnded, position: int) -> bool:
        """Returns True when a decision (with tracking) was appended for this trigger."""
        for _ in range(DECISION_ATTEMPTS):
            try:
                appended = self.app.decide(
                    [(trigger, decided_by(position))], Tracking(StateOwner.name, position)
                )
            except ConcurrentUpdate:
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
