"""A log written by release 0.1.0 still reads, projects, verifies and carries on today."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.container import Container
from api.settings import Settings
from domain.application import StateOwner
from domain.item import LeaseReported, fingerprinted, report_fingerprint
from projections import maintenance
from tests import release_log
from tests.helpers import Api

pytestmark = pytest.mark.integration

STAGES = ["research", "draft", "edit", "publish"]
# State folded from the same events since release 0.1.0: who holds each lease (issue 8); an
# agent's cap on its leases, the item an item was forked from, and whether an item is an eval case
# (ItemCreated version 2, upcast to False) (issue 11).
ADDED_SINCE = {"lease_holders", "max_concurrent_leases", "forked_from", "eval"}


@pytest.fixture(scope="module")
def app() -> Iterator[StateOwner]:
    application = StateOwner(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


def _public(aggregate: Any) -> dict[str, Any]:
    state = {k: v for k, v in vars(aggregate).items() if not k.startswith("_")}
    return {"type": type(aggregate).__name__, **json.loads(json.dumps(state, default=str))}


def test_every_stored_event_reads_and_writes_back_unchanged(app: StateOwner) -> None:
    """Each event of the old log decodes, and encodes again to the same topic and state — but
    for what its upcasters add, and its version, where a later release changed the type."""
    for record in release_log.records():
        event = app.mapper.to_domain_event(record.stored)
        again = app.mapper.to_stored_event(event)
        assert again.topic == record.stored.topic
        written = json.loads(again.state)
        upcast = json.loads(record.stored.state)
        version = type(event).class_version
        if version > 1:
            assert written.pop("class_version") == version
            for step in range(1, version):
                getattr(type(event), f"upcast_v{step}_v{step + 1}")(upcast)
        assert written == upcast, record.position


def test_every_aggregate_folds_to_the_state_the_release_folded(app: StateOwner) -> None:
    """Folding the old events gives each aggregate exactly the state the old release gave it."""
    aggregates: dict[str, Any] = {}
    for record in release_log.records():
        key = str(record.stored.originator_id)
        aggregates[key] = app.mapper.to_domain_event(record.stored).mutate(aggregates.get(key))
    expected = release_log.folded()
    assert set(aggregates) == set(expected)
    for key, aggregate in aggregates.items():
        state = _public(aggregate)
        # Later releases may fold more from the same events; what the release held stays.
        assert {name: state[name] for name in expected[key]} == expected[key], key
        assert set(state) - set(expected[key]) <= ADDED_SINCE
        assert state.get("eval") in (None, False)  # an old item is a production item


def test_old_report_fingerprints_still_tell_a_repeat(app: StateOwner) -> None:
    """A report's fingerprint, computed today from an old event's fields, is the one it stored:
    a client retrying a report across the upgrade is still answered as a repeat."""
    reports = [
        event
        for event in (app.mapper.to_domain_event(r.stored) for r in release_log.records())
        if isinstance(event, LeaseReported)
    ]
    assert reports
    for event in reports:
        fields = {
            key: getattr(event, key)
            for key in ("outcome", "output", "error", "retryable")
            if hasattr(event, key)
        }
        kind = "completed" if "output" in fields else "failed"
        report = fingerprinted(kind, {**fields, **event.report.fields()})
        assert report_fingerprint(report) == event.fingerprint


@pytest.fixture
def restored(settings: Settings) -> Iterator[Api]:
    """The old log restored into a fresh database, served by today's release."""
    Container(settings).start().close()  # today's schema
    release_log.restore(settings.database_url or "")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Api(client)


def _histories() -> dict[str, list[int]]:
    versions: dict[str, list[int]] = defaultdict(list)
    for record in release_log.records():
        if record.stored.topic.startswith("domain.item:"):
            versions[str(record.stored.originator_id)].append(record.stored.originator_version)
    return versions


def test_the_old_log_projects_verifies_and_reads_as_it_was(restored: Api) -> None:
    """Today's views, built from the old log, equal a replay of it; every item's history and
    every version of it reads back as the old release stored it."""
    restored.settle()
    container: Container = restored.client.app.state.container
    for view in maintenance.VIEWS.values():
        _, differences = maintenance.verify(
            view, container.database, container.app.recorder, container.app.mapper
        )
        assert differences == [], [d.describe() for d in differences]
    golden = release_log.folded()
    for item_id, versions in _histories().items():
        history = restored.events(item_id)
        assert [e["version"] for e in history][: len(versions)] == versions
        for version in versions:
            response = restored.client.get(
                f"/v1/items/{item_id}/at/{version}", headers=restored.admin
            )
            assert response.status_code == 200, response.text
            assert response.json()["version"] == version
        last = restored.client.get(
            f"/v1/items/{item_id}/at/{versions[-1]}", headers=restored.admin
        ).json()
        assert (last["status"], last["stage"]) == (
            golden[item_id]["status"],
            golden[item_id]["stage"],
        )


def test_the_old_logs_open_items_carry_on_to_the_end(restored: Api) -> None:
    """Agents and operators of today take every open item of the old log to done: ready and
    claimed ones (their old lease expires), parked ones (retried) and halted ones (resumed)."""
    restored.settle()
    for stage in STAGES:
        restored.add_agent(f"today-{stage}", stages=[stage])
    items = list(_histories())
    deadline = time.monotonic() + 60
    while True:
        listed = restored.client.get("/v1/items?limit=500", headers=restored.admin).json()
        statuses = {i["id"]: i for i in listed["items"]}
        open_items = [i for i in statuses.values() if i["status"] not in ("done", "cancelled")]
        if not open_items:
            break
        assert time.monotonic() < deadline, open_items
        for item in open_items:
            _move_on(restored, item)
        time.sleep(0.05)
    final = [statuses[item_id]["status"] for item_id in items]
    assert sorted(final) == ["cancelled"] + ["done"] * (len(items) - 1)


def _move_on(api: Api, item: dict[str, Any]) -> None:
    """One step on for an open item: claim and complete it, retry or resume it."""
    item_id, status, stage = item["id"], item["status"], item["stage"]
    if status == "ready":
        agent = f"today-{stage}"
        claimed = api.client.post("/v1/claims", json={"stage": stage}, headers=api.as_(agent))
        if claimed.status_code == 200:
            api.complete(agent, claimed.json()["lease"]["id"], output={"by": "today"})
    elif status == "parked":
        api.client.post(f"/v1/items/{item_id}/retry", headers=api.admin)
    elif status == "halted":
        api.client.post(f"/v1/items/{item_id}/resume", headers=api.admin)


def test_an_event_the_release_cannot_read_is_named_with_its_position(container: Container) -> None:
    """A stored event this release cannot read back (here: its state damaged; a failing upcaster
    takes the same path) stops its readers with an error naming its type and position."""
    from projections.follower import UnreadableEvent, read_batch

    with psycopg.connect(container.database.conninfo) as conn:
        conn.execute(
            "INSERT INTO stateowner_events (originator_id, originator_version, topic, state) "
            "VALUES (gen_random_uuid(), 1, 'domain.topic:Topic.TopicDefined', %s)",
            (b'{"class_version": 1, "name": "t"',),
        )
    with pytest.raises(UnreadableEvent, match=r"TopicDefined event at position 1 cannot be read"):
        read_batch(container.app.recorder, container.app.mapper, 0, 10)
