"""The benchmark's pure helpers: percentiles, ratios, Celery hand-offs and the seed's chain."""

from __future__ import annotations

import uuid

import pytest

from bench.bench import beside, ratio
from bench.peer import handoffs
from bench.reads import percentile
from bench.seed import Chain
from store.chain import GENESIS, Link, first_break

pytestmark = pytest.mark.unit


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([3.0], 0.99) == 3.0


def test_a_ratio_is_shown_to_two_places_and_never_divides_by_zero() -> None:
    assert ratio(3.0, 2.0) == " 1.50x"
    assert ratio(1.0, 0.0) == "  n/a"
    line = beside("reads", "p99 1.00 ms", "p99 1.00 ms at 10,000", ratio(1, 1), "<= 1.5x")
    assert line.endswith("=  1.00x   (target <= 1.5x)")


def test_a_hand_off_is_one_tasks_end_to_the_next_ones_start() -> None:
    trace = {"marks": [[10.0, 10.5], [10.502, 10.6], [10.61, 10.7]]}
    assert handoffs(trace) == pytest.approx([2.0, 10.0])


def test_the_seeds_chain_is_the_one_the_log_verifies() -> None:
    chain = Chain(0, GENESIS)
    links = []
    for version in (1, 2, 3):
        originator = uuid.UUID(int=version)
        position, digest = chain.extend(originator, version, "domain.item:Item.StageReady", b"{}")
        links.append(
            Link(position, originator, version, "domain.item:Item.StageReady", b"{}", digest)
        )
    assert [link.position for link in links] == [1, 2, 3]
    assert first_break(links, GENESIS) == (None, links[-1].hash)
