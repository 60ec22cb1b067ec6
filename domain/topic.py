"""The Topic aggregate: a named subject that items belong to, with its owner and metadata."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

TOPIC_NAMESPACE = uuid.UUID("0b7d3c52-96a4-4e0c-8f53-2b3f8c1d9e02")


class Topic(Aggregate):
    @staticmethod
    def create_id(name: str) -> uuid.UUID:
        return uuid.uuid5(TOPIC_NAMESPACE, name)

    @event("TopicDefined")
    def __init__(
        self,
        name: str,
        owner: str | None,
        priority: int,
        tags: list[str],
        metadata: dict[str, Any],
        actor: str,
        caused_by: str,
    ) -> None:
        self.name = name
        self.owner = owner
        self.priority = priority
        self.tags = tags
        self.metadata = metadata

    def describe(
        self,
        *,
        owner: str | None,
        priority: int,
        tags: list[str],
        metadata: dict[str, Any],
        actor: str,
        caused_by: str,
    ) -> bool:
        """Record new metadata; returns False (and records nothing) when nothing changed."""
        unchanged = (owner, priority, tags, metadata) == (
            self.owner,
            self.priority,
            self.tags,
            self.metadata,
        )
        if unchanged:
            return False
        self._updated(
            name=self.name,
            owner=owner,
            priority=priority,
            tags=tags,
            metadata=metadata,
            actor=actor,
            caused_by=caused_by,
        )
        return True

    @event("TopicUpdated")
    def _updated(
        self,
        name: str,
        owner: str | None,
        priority: int,
        tags: list[str],
        metadata: dict[str, Any],
        actor: str,
        caused_by: str,
    ) -> None:
        self.owner = owner
        self.priority = priority
        self.tags = tags
        self.metadata = metadata
