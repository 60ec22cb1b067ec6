"""The tables are the log, folded: live projections, rebuilds and verify agree with a replay."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

import pytest
from psycopg import sql

from api.container import Container
from domain.item import Item
from domain.values import (
    By,
    Claimant,
    Completion,
    Failure,
    NewItem,
    Registration,
    Report,
    TopicFacts,
)
from projections import maintenance
from tests.helpers import ARTICLE_SPEC

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")
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


def _work_through(container: Container, items: int, seed: int = 7) -> list[Item]:
    """Create items and push them a random way along the pipeline, the bus deciding inline."""
    app = container.app
    rng = random.Random(seed)
    app.put_pipeline("article", SPEC, OPS)
    for stage in STAGES:
        app.register_agent(Registration(f"{stage}-bot", "agent", (stage,), "h"), OPS)
    created = []
    for n in range(items):
        topic = rng.choice(["a", "b", "c"])
        item, _ = app.create_item(NewItem("article", topic, f"item {n}", {"n": n}, str(n)), OPS)
        created.append(item)
    app.put_topic("a", TopicFacts("ann", 2, ("x",), {"k": 1}), OPS)
    for item in created:
        for _ in range(rng.randint(0, 6)):
            current = app.item(item.id)
            if current.status != "ready":
                break
            stage = current.stage
            agent = f"{stage}-bot"
            by = By(f"agent:{agent}", "t")
            holder = Claimant(agent, frozenset({stage}))
            _, lease, _ = app.claim(item.id, stage, holder, by)
            roll = rng.random()
            report = Report(Decimal("0.01") * rng.randint(0, 9), 10, 5, 3)
            if roll < 0.2:
                failure = Failure("flaky", retryable=rng.random() < 0.7, report=report)
                app.fail_stage(lease, holder, failure, by)
            else:
                outcome = "revise" if stage == "edit" and roll < 0.5 else None
                app.complete_stage(lease, holder, Completion({"stage": stage}, outcome, report), by)
            trigger = _last_event(container, item.id)
            app.decide([(trigger, By("system:bus", "t"))])
            if rng.random() < 0.05:
                app.cancel_item(item.id, OPS)
                break
    return created


def _last_event(container: Container, item_id: Any) -> Any:
    return list(container.app.events.get(item_id))[-1]


def _catch_up(container: Container) -> None:
    container.start(projections=True)
    head = container.app.position()
    deadline = time.monotonic() + 20
    while any(view.position() < head for view in container.views.values()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _rows(container: Container, table: str, key: str) -> dict[Any, dict[str, Any]]:
    with container.pool.connection() as conn:
        rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        return {row[key]: row for row in rows.fetchall()}


def test_item_status_equals_a_fold_of_each_items_events(container: Container) -> None:
    """Every item_status row says what the item aggregate, replayed from its events, says."""
    created = _work_through(container, items=30)
    _catch_up(container)
    rows = _rows(container, "item_status", "item_id")
    assert set(rows) == {item.id for item in created}
    for item in created:
        folded = container.app.item(item.id)
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


def test_topic_inventory_counts_every_item_once(container: Container) -> None:
    """By-status counts per topic add up to the items of that topic, and spend to their cost."""
    created = _work_through(container, items=20, seed=11)
    _catch_up(container)
    topics = {t["name"]: t for t in container.queries.topics()}
    for name, topic in topics.items():
        mine = [container.app.item(i.id) for i in created if i.topic == name]
        assert topic["items"]["total"] == len(mine)
        assert sum(topic["items"]["by_status"].values()) == len(mine)
        assert topic["cost_usd"] == sum((i.cost_usd for i in mine), Decimal(0))
    assert topics["a"]["owner"] == "ann"
    assert topics["a"]["defined"]


def test_rebuild_reproduces_the_live_tables(container: Container) -> None:
    """Rebuilding every projection from position 0 yields exactly the rows the live runners wrote."""
    _work_through(container, items=25, seed=3)
    _catch_up(container)
    before = {
        t: _rows(container, t, k)
        for t, k in [("item_status", "item_id"), ("topics", "name"), ("agents", "name")]
    }
    for follower in container.followers:
        follower.stop()
    for view_class in maintenance.VIEWS.values():
        maintenance.rebuild(
            view_class, container.database, container.app.recorder, container.app.mapper
        )
    after = {
        t: _rows(container, t, k)
        for t, k in [("item_status", "item_id"), ("topics", "name"), ("agents", "name")]
    }
    assert after == before
    assert all(view.position() == container.app.position() for view in container.views.values())


def test_verify_finds_a_row_edited_by_hand(container: Container) -> None:
    """Verify is clean on honest tables and names the row and column an operator edited by hand."""
    created = _work_through(container, items=10, seed=5)
    _catch_up(container)
    for view_class in maintenance.VIEWS.values():
        _, differences = maintenance.verify(
            view_class, container.database, container.app.recorder, container.app.mapper
        )
        assert differences == []
    victim = created[0].id
    with container.pool.connection() as conn:
        conn.execute("UPDATE item_status SET status = 'done' WHERE item_id = %s", (victim,))
        conn.execute("DELETE FROM topics WHERE name = 'b'")
    _, differences = maintenance.verify(
        maintenance.VIEWS["item_status"],
        container.database,
        container.app.recorder,
        container.app.mapper,
    )
    assert [d.key for d in differences] == [{"item_id": victim}]
    assert "status: live='done'" in differences[0].describe()
    _, topic_drift = maintenance.verify(
        maintenance.VIEWS["topics"],
        container.database,
        container.app.recorder,
        container.app.mapper,
    )
    assert [(d.table, d.key, d.live is None) for d in topic_drift] == [
        ("topics", {"name": "b"}, True)
    ]
