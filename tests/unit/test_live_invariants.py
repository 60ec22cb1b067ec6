"""The history checker used by the fault tests catches the faults it exists to catch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.live import check_invariants

pytestmark = pytest.mark.unit


ITEM = "3f2a0c4e-0000-4000-8000-000000000001"


def _event(
    position: int, type_: str, actor: str = "agent:a", caused_by: str = "req"
) -> dict[str, Any]:
    return {
        "position": position,
        "version": position,
        "item_id": ITEM,
        "type": type_,
        "actor": actor,
        "caused_by": caused_by,
        "data": {"lease_id": "lease-1"},
    }


GOOD = [
    _event(1, "ItemCreated"),
    _event(2, "StageReady"),
    _event(3, "StageClaimed"),
    _event(4, "StageCompleted"),
    _event(5, "ItemCompleted", "system:bus", "event:4"),
]


def test_a_clean_history_passes() -> None:
    """One completion, one decision naming it, one ItemCompleted: accepted."""
    check_invariants(GOOD)


def test_a_decision_may_name_its_trigger_by_item_and_version() -> None:
    """A decision appended with its trigger names it `event:<item>@<version>`: accepted."""
    check_invariants([*GOOD[:-1], _event(5, "ItemCompleted", "system:bus", f"event:{ITEM}@4")])


@pytest.mark.parametrize(
    "history",
    [
        GOOD[:-1],
        [
            *GOOD[:-1],
            _event(5, "StageReady", "system:bus", "event:4"),
            _event(6, "ItemCompleted", "system:bus", "event:4"),
        ],
        [*GOOD, _event(6, "ItemCompleted", "system:bus", "event:4")],
        [*GOOD[:-1], _event(5, "ItemCompleted", "system:bus", "event:3")],
        [*GOOD[:-1], _event(5, "ItemCompleted", "system:bus", f"event:{ITEM}@3")],
    ],
    ids=[
        "no completion",
        "two decisions for one trigger",
        "completed twice",
        "decision names the wrong trigger",
        "decision names the wrong version",
    ],
)
def test_a_faulty_history_is_caught(history: list[dict[str, Any]]) -> None:
    """Missing, doubled or misattributed decisions fail the check."""
    with pytest.raises(AssertionError):
        check_invariants(history)
