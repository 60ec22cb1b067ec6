"""Group commit against PostgreSQL: many commands' events in one append, each command refused
alone on a conflict, the chain and the order unbroken; and concurrent writers really grouped."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Tracking

from api.container import Container
from domain.topic import Topic
from domain.values import By, Claimant, Completion, NewItem, TopicFacts
from store import ledger
from store.log_recorder import Append, SingleTripRecorder

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")


def _recorder(container: Container) -> SingleTripRecorder:
    recorder = container.app.recorder
    assert isinstance(recorder, SingleTripRecorder)
    return recorder


def _defined(container: Container, name: str) -> Append:
    topic = Topic.define(name, TopicFacts("owner"), OPS)
    stored = [container.app.mapper.to_stored_event(e) for e in topic.collect_events()]
    return Append(stored, None)


def test_a_conflicting_command_is_refused_alone_in_its_group(container: Container) -> None:
    """Of three commands appended together, the one whose aggregate version is taken (by an
    earlier append, or by a neighbour in the same group) gets IntegrityError; the others land
    at consecutive positions and the chain stays intact."""
    recorder = _recorder(container)
    taken = _defined(container, "taken")
    recorder.insert_events(taken.events)
    head = container.app.position()
    twin = _defined(container, "twin")
    outcomes = recorder._append_together(
        [_defined(container, "one"), taken, twin, twin, _defined(container, "two")]
    )
    assert outcomes[0] == [head + 1]
    assert isinstance(outcomes[1], IntegrityError)
    assert outcomes[2] == [head + 2]
    assert isinstance(outcomes[3], IntegrityError)
    assert outcomes[4] == [head + 3]
    assert container.app.position() == head + 3
    assert ledger.verify(container.database.conninfo).broken is None


def test_a_tracking_position_recorded_already_refuses_its_command_alone(
    container: Container,
) -> None:
    """Two decisions carrying the same follower position: the second is refused, with nothing
    of it written."""
    recorder = _recorder(container)
    first = Append(_defined(container, "a").events, Tracking("bus-test", 5))
    second = Append(_defined(container, "b").events, Tracking("bus-test", 5))
    outcomes = recorder._append_together([first, second])
    assert isinstance(outcomes[0], list)
    assert isinstance(outcomes[1], IntegrityError)
    assert "recorded already" in str(outcomes[1])
    assert recorder.max_tracking_id("bus-test") == 5
    assert container.app.repository.get(Topic.create_id("a")).version == 1
    with pytest.raises(AggregateNotFoundError):
        container.app.repository.get(Topic.create_id("b"))


def test_concurrent_commands_share_appends_and_each_lands_once(container: Container) -> None:
    """Sixteen agents completing stages at once: every command lands exactly once, fewer
    appends than commands reach the database, and the log verifies."""
    app = container.app
    app.put_pipeline("p", {"stages": [{"name": "work"}]}, OPS)
    agent = Claimant("a", frozenset({"work"}))
    by = By("agent:a", "t")
    ids = [app.create_item(NewItem("p", "t", str(n), {}), OPS)[0].id for n in range(64)]
    group = _recorder(container).group_commit
    batches_before, appends_before = group.batches, group.appends
    errors: list[Any] = []

    def work(mine: list[Any]) -> None:
        try:
            for item_id in mine:
                _, lease, _ = app.claim(item_id, "work", agent, by)
                app.complete_stage(lease, agent, Completion(), by)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(ids[n::16],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert all(app.item(i).status == "done" for i in ids)
    appends = group.appends - appends_before
    assert appends == 128
    assert group.batches - batches_before < appends
    assert ledger.verify(container.database.conninfo).broken is None
