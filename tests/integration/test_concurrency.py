"""Two writers, one item: optimistic concurrency lets exactly one of them win."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest

from api.container import Container
from domain.errors import ConcurrentUpdate, StateConflict
from domain.values import By, Claimant, Completion, NewItem, Report
from tests.helpers import ARTICLE_SPEC

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")
NEW = NewItem("article", "t", "x", {}, "f")
RESEARCH = frozenset({"research"})


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


def test_two_agents_claiming_one_item_at_once_exactly_one_wins(container: Container) -> None:
    """Of two simultaneous claims on one ready stage, one succeeds and one is refused."""
    app = container.app
    app.put_pipeline("article", ARTICLE_SPEC, OPS)
    item, _ = app.create_item(NEW, OPS)
    for _ in range(20):
        results = _race(
            [
                lambda name=name, item=item: app.claim(
                    item.id, "research", Claimant(name, RESEARCH), By(name, "t")
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
        app.cancel_item(item.id, OPS)
        item, _ = app.create_item(NEW, OPS)


def test_a_completion_racing_a_cancel_leaves_one_consistent_history(container: Container) -> None:
    """Whichever of complete and cancel lands first, the other sees the new state, never a mix."""
    app = container.app
    app.put_pipeline("article", ARTICLE_SPEC, OPS)
    agent = By("agent:a", "t")
    holder = Claimant("a", RESEARCH)
    completion = Completion(report=Report(cost_usd=Decimal("0.1")))
    for _ in range(10):
        item, _ = app.create_item(NEW, OPS)
        _, lease, _ = app.claim(item.id, "research", holder, agent)
        results = _race(
            [
                lambda lease=lease: app.complete_stage(lease, holder, completion, agent),
                lambda item=item: app.cancel_item(item.id, OPS),
            ]
        )
        final = app.item(item.id)
        assert final.status == "cancelled"  # cancel wins either way: it may follow a completion
        assert all(isinstance(r, tuple) or r.__class__.__name__ == "LeaseLost" for r in results), (
            results
        )
