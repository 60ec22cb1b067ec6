"""The tables are the log, folded: live projections, rebuilds and verify agree with a replay."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

import pytest

from api.runtime import Runtime
from domain.item import Item
from projections import maintenance, queries
from tests.helpers import ARTICLE_SPEC

pytestmark = pytest.mark.integration

ACTOR = "operator:test"
STAGES = ["research", "draft", "edit", "publish"]
SPEC = {
    **ARTICLE_SPEC,
    "stages": [
        {
            "name": stage,
            "retry_backoff_seconds": 0,
            "on": ({"revise": "draft"} if stage == "edit" else {}),
        }
        for stage in STAGES
    ],
}


def _work_through(runtime: Runtime, items: int, seed: int = 7) -> list[Item]:
    """Create items and push them a random way along the pipeline, the bus deciding inline."""
    app = runtime.app
    rng = random.Random(seed)
    app.put_pipeline("article", SPEC, actor=ACTOR, caused_by="t")
    for stage in STAGES:
        app.register_agent(
            name=f"{stage}-bot",
            role="agent",
            stages=[stage],
            token_hash="h",
            request_digest="",
            actor=ACTOR,
            caused_by="t",
        )
    created = []
    for n in range(items):
        item, _ = app.create_item(
            pipeline="article",
            topic=rng.choice(["a", "b", "c"]),
            title=f"item {n}",
            input={"n": n},
            fingerprint=str(n),
            actor=ACTOR,
            caused_by="t",
        )
        created.append(item)
    app.put_topic(
        "a", owner="ann", priority=2, tags=["x"], metadata={"k": 1}, actor=ACTOR, caused_by="t"
    )
    for item in created:
        for _ in range(rng.randint(0, 6)):
            current = app.item(item.id)
            if current.status != "ready":
                break
            stage = current.stage
            _, lease, _ = app.claim(
                item.id, stage=stage, agent=f"{stage}-bot", actor="a", caused_by="t"
            )
            roll = rng.random()
            common: dict[str, Any] = {
                "agent": f"{stage}-bot",
                "cost_usd": Decimal("0.01") * rng.randint(0, 9),
                "tokens_in": 10,
                "tokens_out": 5,
                "duration_ms": 3,
                "trace": None,
                "actor": "a",
                "caused_by": "t",
            }
            if roll < 0.2:
                app.fail_stage(lease, error="flaky", retryable=rng.random() < 0.7, **common)
            else:
                outcome = "revise" if stage == "edit" and roll < 0.5 else None
                app.complete_stage(lease, outcome=outcome, output={"stage": stage}, **common)
            trigger = app.item(item.id)
            app.decide(
                item.id, trigger.version, _last_event(runtime, item.id), tracking=None, actor="bus"
            )
            if rng.random() < 0.05:
                app.cancel_item(item.id, actor=ACTOR, caused_by="t")
                break
    return created


def _last_event(runtime: Runtime, item_id: Any) -> Any:
    return list(runtime.app.events.get(item_id))[-1]


def _catch_up(runtime: Runtime) -> None:
    runtime.start(projections=True, bus=False, ready_signal=False)
    head = runtime.app.position()
    deadline = time.monotonic() + 20
    while any(view.position() < head for view in runtime.views.values()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _rows(runtime: Runtime, table: str, key: str) -> dict[Any, dict[str, Any]]:
    with runtime.pool.connection() as conn:
        return {row[key]: row for row in conn.execute(f"SELECT * FROM {table}").fetchall()}


def test_item_status_equals_a_fold_of_each_items_events(runtime: Runtime) -> None:
    """Every item_status row says what the item aggregate, replayed from its events, says."""
    created = _work_through(runtime, items=30)
    _catch_up(runtime)
    rows = _rows(runtime, "item_status", "item_id")
    assert set(rows) == {item.id for item in created}
    for item in created:
        folded = runtime.app.item(item.id)
        row = rows[item.id]
        assert (row["stage"], row["status"], row["attempt"], row["version"]) == (
            folded.stage,
            folded.status,
            folded.attempt,
            folded.version,
        )
        assert row["visits"] == folded.visits
        assert row["transitions"] == folded.transitions
        assert row["cost_usd"] == folded.cost_usd
        assert (row["tokens_in"], row["tokens_out"]) == (folded.tokens_in, folded.tokens_out)
        assert row["agent"] == folded.agent


def test_topic_inventory_counts_every_item_once(runtime: Runtime) -> None:
    """By-status counts per topic add up to the items of that topic, and spend to their cost."""
    created = _work_through(runtime, items=20, seed=11)
    _catch_up(runtime)
    with runtime.pool.connection() as conn:
        topics = {t["name"]: t for t in queries.topics(conn)}
    for name, topic in topics.items():
        mine = [runtime.app.item(i.id) for i in created if i.topic == name]
        assert topic["items"]["total"] == len(mine)
        assert sum(topic["items"]["by_status"].values()) == len(mine)
        assert topic["cost_usd"] == sum((i.cost_usd for i in mine), Decimal(0))
    assert topics["a"]["owner"] == "ann"
    assert topics["a"]["defined"]


def test_rebuild_reproduces_the_live_tables(runtime: Runtime) -> None:
    """Rebuilding every projection from position 0 yields exactly the rows the live runners wrote."""
    _work_through(runtime, items=25, seed=3)
    _catch_up(runtime)
    before = {
        t: _rows(runtime, t, k)
        for t, k in [("item_status", "item_id"), ("topics", "name"), ("agents", "name")]
    }
    for follower in runtime.followers:
        follower.stop()
    for view_class in maintenance.VIEWS.values():
        maintenance.rebuild(view_class, runtime.datastore, runtime.app.recorder, runtime.app.mapper)
    after = {
        t: _rows(runtime, t, k)
        for t, k in [("item_status", "item_id"), ("topics", "name"), ("agents", "name")]
    }
    assert after == before
    assert all(view.position() == runtime.app.position() for view in runtime.views.values())


def test_verify_finds_a_row_edited_by_hand(runtime: Runtime) -> None:
    """Verify is clean on honest tables and names the row and column an operator edited by hand."""
    created = _work_through(runtime, items=10, seed=5)
    _catch_up(runtime)
    for view_class in maintenance.VIEWS.values():
        _, differences = maintenance.verify(
            view_class, runtime.datastore, runtime.app.recorder, runtime.app.mapper
        )
        assert differences == []
    victim = created[0].id
    with runtime.pool.connection() as conn:
        conn.execute("UPDATE item_status SET status = 'done' WHERE item_id = %s", (victim,))
        conn.execute("DELETE FROM topics WHERE name = 'b'")
    _, differences = maintenance.verify(
        maintenance.VIEWS["item_status"],
        runtime.datastore,
        runtime.app.recorder,
        runtime.app.mapper,
    )
    assert [d.key for d in differences] == [{"item_id": victim}]
    assert "status: live='done'" in differences[0].describe()
    _, topic_drift = maintenance.verify(
        maintenance.VIEWS["topics"], runtime.datastore, runtime.app.recorder, runtime.app.mapper
    )
    assert [(d.table, d.key, d.live is None) for d in topic_drift] == [
        ("topics", {"name": "b"}, True)
    ]
