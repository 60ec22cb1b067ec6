"""The Topic aggregate: a named subject that items belong to, with its owner and metadata."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from domain.recorded import Recorded, RecordedAggregate
from domain.values import By, TopicFacts

TOPIC_NAMESPACE = uuid.UUID("0b7d3c52-96a4-4e0c-8f53-2b3f8c1d9e02")


class Described(Recorded):
    """A topic's facts as an operator or agent put them."""

    name: str
    owner: str | None
    priority: int
    tags: list[str]
    metadata: dict[str, Any]

    def apply(self, topic: Topic) -> None:
        topic.name = self.name
        topic.owner = self.owner
        topic.priority = self.priority
        topic.tags = self.tags
        topic.metadata = self.metadata


class Topic(RecordedAggregate):
    if TYPE_CHECKING:
        name: str
        owner: str | None
        priority: int
        tags: list[str]
        metadata: dict[str, Any]

    class TopicDefined(Aggregate.Created, Described):
        pass

    class TopicUpdated(Described):
        pass

    @staticmethod
    def create_id(name: str) -> uuid.UUID:
        return uuid.uuid5(TOPIC_NAMESPACE, name)

    @classmethod
    def define(cls, name: str, facts: TopicFacts, by: By) -> Topic:
        return cls._begin(cls.TopicDefined, cls.create_id(name), by, **_fields(name, facts))

    @property
    def facts(self) -> TopicFacts:
        return TopicFacts(self.owner, self.priority, tuple(self.tags), self.metadata)

    def describe(self, facts: TopicFacts, by: By) -> bool:
        """Record new facts; returns False (and records nothing) when nothing changed."""
        if facts == self.facts:
            return False
        self._record(Topic.TopicUpdated, by, **_fields(self.name, facts))
        return True


def _fields(name: str, facts: TopicFacts) -> dict[str, Any]:
    return {
        "name": name,
        "owner": facts.owner,
        "priority": facts.priority,
        "tags": list(facts.tags),
        "metadata": facts.metadata,
    }
