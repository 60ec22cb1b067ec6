"""The bulk rebuild's decoder gives exactly the mapper's events, including for stored JSON its
fast path must leave to the mapper."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from domain.application import StateOwner
from domain.values import By, NewItem
from projections.bulk import Decoder

pytestmark = pytest.mark.unit

OPS = By("operator:test", "t")


@pytest.fixture
def app() -> Iterator[StateOwner]:
    application = StateOwner(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    application.put_pipeline("p", {"stages": [{"name": "work"}]}, OPS)
    yield application
    application.close()


def _stored(app: StateOwner, item_input: dict[str, Any], title: str = "t") -> list[StoredEvent]:
    item, _ = app.create_item(NewItem("p", "topic", title, item_input), OPS)
    return [app.mapper.to_stored_event(e) for e in app.events.get(item.id)]


def _same(app: StateOwner, stored: StoredEvent) -> None:
    expected = app.mapper.to_domain_event(stored)
    got = Decoder(app.mapper)(
        1,
        stored.originator_id,  # type: ignore[arg-type]
        stored.originator_version,
        stored.topic,
        stored.state,
    )
    assert type(got) is type(expected)
    assert vars(got) == vars(expected)


@pytest.mark.parametrize(
    ("item_input", "title"),
    [
        ({"n": 1, "nested": {"deep": [1, 2.5, None, True]}}, "plain"),
        ({"when": datetime(2026, 1, 2, tzinfo=UTC), "who": uuid.uuid4()}, "typed values nested"),
        ({"_type_": "uuid_hex", "x": 1}, "a key named like a type marker"),
        ({"k": '"_type_"'}, 'a "_type_" in a text'),
        ({"k": "tab\tnul\x00 and é ✓"}, "escapes and non-ASCII"),
        ({"big": 2**70}, "an integer past 64 bits"),
    ],
)
def test_each_event_decodes_as_the_mapper_decodes_it(
    app: StateOwner, item_input: dict[str, Any], title: str
) -> None:
    """Whatever the fields hold, the decoder's event has the mapper's class and fields."""
    for stored in _stored(app, item_input, title):
        _same(app, stored)


def test_a_hidden_type_marker_is_left_to_the_mapper(app: StateOwner) -> None:
    """A typed value written with an escaped key (by hand, not by the library) still decodes as
    the mapper decodes it."""
    created = _stored(app, {"x": 1})[0]
    marker = f'{{"\\u005ftype_":"uuid_hex","_data_":"{uuid.uuid4().hex}"}}'
    state = created.state.replace(b'{"x":1}', f'{{"x":{marker}}}'.encode())
    assert state != created.state
    _same(app, StoredEvent(created.originator_id, 1, created.topic, state))
