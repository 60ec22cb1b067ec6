"""The stream's generator without a server: it reads one batch at a time, only as fast as its
reader takes them, and filters by type, item and topic."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from api.stream import BATCH, LogWatch, StreamFilter, StreamHub, event_stream
from domain.item import Item
from domain.pipeline import parse_spec
from domain.values import By, NewItem

pytestmark = pytest.mark.unit

SPEC = parse_spec({"stages": [{"name": "a"}]})


def item_events(topic: str) -> list[Any]:
    item = Item.start(
        uuid.uuid4(),
        NewItem("p", topic, "t", {}),
        pipeline_version=1,
        spec=SPEC,
        by=By("admin:builtin", "r"),
    )
    return list(item.collect_events())


def test_a_slow_reader_holds_one_batch_at_a_time() -> None:
    """However long the log, the generator reads the next batch only once the last was taken."""
    events = [item_events("t")[0] for _ in range(BATCH * 3)]
    reads: list[int] = []

    def read(after: int, limit: int) -> list[tuple[Any, int]]:
        reads.append(after)
        return [(event, after + 1 + i) for i, event in enumerate(events[after : after + limit])]

    async def scenario() -> None:
        hub = StreamHub(max_streams=1, keepalive_seconds=60)
        watch = LogWatch("", "channel", asyncio.get_running_loop())
        stream = event_stream(hub, watch, read, 0, lambda _: True)
        await anext(stream)  # the opening comment
        first = await anext(stream)
        assert first.count("id: ") == BATCH
        assert reads == [0]  # nothing more is read until this batch has been taken
        await anext(stream)
        assert reads == [0, BATCH]
        await stream.aclose()

    # Its own thread: a browser test's Playwright may hold this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()


def test_the_filter_keeps_what_it_names() -> None:
    """Type, item and topic each narrow the events; the topic of an item is asked once."""
    wanted, other = item_events("news"), item_events("sport")
    asked: list[uuid.UUID] = []

    def topic_of(item_id: uuid.UUID) -> str | None:
        asked.append(item_id)
        return "news" if item_id == wanted[0].originator_id else "sport"

    by_type = StreamFilter(types=frozenset({"StageReady"}))
    assert [by_type.admits(e) for e in wanted] == [False, True]
    by_item = StreamFilter(item=other[0].originator_id)
    assert [by_item.admits(e) for e in wanted + other] == [False, False, True, True]
    by_topic = StreamFilter(topic="news", topic_of=topic_of)
    assert [by_topic.admits(e) for e in wanted[1:] + other[1:] + other[1:]] == [True, False, False]
    assert asked == [wanted[0].originator_id, other[0].originator_id]
    created_first = StreamFilter(topic="news", topic_of=topic_of)
    assert [created_first.admits(e) for e in wanted] == [True, True]
