"""What every aggregate here shares: its events say who caused them, and why."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Self

from eventsourcing.domain import Aggregate

from domain.values import By


class Recorded(Aggregate.Event):
    """An event with its cause: the actor and the request or event that caused it.

    Every event type has a version (`class_version`, 1 unless a class says more). A change to
    a stored event's fields raises its version and adds an upcaster, `upcast_vN_vN+1`, that
    brings a stored state of the older version up: see docs/changing-events.md."""

    class_version: ClassVar[int] = 1

    actor: str
    caused_by: str

    @property
    def by(self) -> By:
        return By(self.actor, self.caused_by)


class RecordedAggregate(Aggregate):
    """An aggregate whose events are all `Recorded`.

    Its state attributes are declared under `if TYPE_CHECKING:` in each subclass: annotations
    present at run time would make the library treat the aggregate as a dataclass.
    """

    def _record(self, event_class: type[Recorded], by: By, **fields: Any) -> None:
        self.trigger_event(event_class, actor=by.actor, caused_by=by.caused_by, **fields)

    @classmethod
    def _begin(
        cls, event_class: type[Aggregate.Created], aggregate_id: uuid.UUID, by: By, **fields: Any
    ) -> Self:
        """Create the aggregate with its first event."""
        return cls._create(
            event_class, id=aggregate_id, actor=by.actor, caused_by=by.caused_by, **fields
        )
