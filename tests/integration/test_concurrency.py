"""Two writers, one item: optimistic concurrency lets exactly one of them win."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest

from api.runtime import Runtime
from domain.errors import ConcurrentUpdate, StateConflict
from tests.helpers import ARTICLE_SPEC

pytestmark = pytest.mark.integration

ACTOR = "operator:test"


def _race(workers: list[Callable[[], object]]) -> list[object]:
    barrier = threading.Barrier(len(workers))
    results: list[object] = [None] * len(workers)

    def run(index: int, work: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_agents_claiming_one_item_at_once_exactly_one_wins(runtime: Runtime) -> None:
    """Of two simultaneous claims on one ready stage, one succeeds and one is refused."""
    app = runtime.app
    app.put_pipeline("article", ARTICLE_SPEC, actor=ACTOR, caused_by="t")
    item, _ = app.create_item(
        pipeline="article",
        topic="t",
        title="x",
        input={},
        fingerprint="f",
        actor=ACTOR,
        caused_by="t",
    )
    for _ in range(20):
        results = _race(
            [
                lambda name=name, item=item: app.claim(
                    item.id, stage="research", agent=name, actor=name, caused_by="t"
                )
                for name in ("a", "b")
            ]
        )
        wins = [r for r in results if isinstance(r, tuple)]
        losses = [r for r in results if isinstance(r, (ConcurrentUpdate, StateConflict))]
        assert (len(wins), len(losses)) == (1, 1), results
        claimed = app.item(item.id)
        assert claimed.status == "claimed"
        assert claimed.agent in ("a", "b")
        app.cancel_item(item.id, actor=ACTOR, caused_by="t")
        item, _ = app.create_item(
            pipeline="article",
            topic="t",
            title="x",
            input={},
            fingerprint="f",
            actor=ACTOR,
            caused_by="t",
        )


def test_a_completion_racing_a_cancel_leaves_one_consistent_history(runtime: Runtime) -> None:
    """Whichever of complete and cancel lands first, the other sees the new state, never a mix."""
    app = runtime.app
    app.put_pipeline("article", ARTICLE_SPEC, actor=ACTOR, caused_by="t")
    for _ in range(10):
        item, _ = app.create_item(
            pipeline="article",
            topic="t",
            title="x",
            input={},
            fingerprint="f",
            actor=ACTOR,
            caused_by="t",
        )
        _, lease, _ = app.claim(item.id, stage="research", agent="a", actor="a", caused_by="t")
        results = _race(
            [
                lambda lease=lease: app.complete_stage(
                    lease,
                    agent="a",
                    outcome=None,
                    output=None,
                    cost_usd=Decimal("0.1"),
                    tokens_in=0,
                    tokens_out=0,
                    duration_ms=0,
                    trace=None,
                    actor="a",
                    caused_by="t",
                ),
                lambda item=item: app.cancel_item(item.id, actor=ACTOR, caused_by="t"),
            ]
        )
        final = app.item(item.id)
        assert final.status == "cancelled"  # cancel wins either way: it may follow a completion
        assert all(isinstance(r, tuple) or r.__class__.__name__ == "LeaseLost" for r in results), (
            results
        )
