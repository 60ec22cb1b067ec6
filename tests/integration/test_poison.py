"""A poison event stops only the view that cannot apply it, visibly, until an operator skips it;
the other views and the bus go on throughout."""

from __future__ import annotations

import time

import pytest

from api.container import Container
from api.routes.log import projection_statuses
from domain.values import By, NewItem, TopicFacts
from projections.poison import OPEN, SKIPPED
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")


def _until(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _poisoned(container: Container) -> int:
    """A log whose topics view meets an event it cannot apply (a NUL, which PostgreSQL text
    cannot hold, appended past the door); returns that event's position."""
    app = container.app
    app.put_pipeline("p", {"stages": [{"name": "work"}]}, OPS)
    app.create_item(NewItem("p", "t", "before", {}), OPS)
    _, poison = app.put_topic("t", TopicFacts(owner="ann\x00"), OPS)
    app.create_item(NewItem("p", "t", "after", {}), OPS)
    return poison


def test_a_poison_event_stops_one_view_and_is_recorded(container: Container) -> None:
    """The topics view stops before the event it cannot apply and records it as a dead letter;
    every other view applies the whole log."""
    poison = _poisoned(container)
    head = container.app.position()
    container.start(projections=True, bus=True)
    _until(lambda: container.views["item_status"].position() == head)
    _until(lambda: container.bus.position() == head)
    (letter,) = container.dead_letters.all()
    assert (letter.view, letter.position, letter.status) == ("topics", poison, OPEN)
    assert letter.event_type == "TopicDefined"
    assert "NUL" in letter.error or "0x00" in letter.error
    assert container.views["topics"].position() == poison - 1
    assert all(
        view.position() == head for name, view in container.views.items() if name != "topics"
    )
    shown = {status["name"]: status for status in projection_statuses(container)}
    assert shown["topics"]["running"] is False
    assert shown["topics"]["dead_letters"][0]["position"] == poison
    assert shown["item_status"]["running"] is True
    assert shown["bus"]["lag"] == 0, "the bus goes on throughout"


def test_an_operator_skips_the_poison_and_the_view_goes_on(
    container: Container, clean_database: str
) -> None:
    """Skipping a position that is not dead-lettered is refused; skipping the dead letter lets
    the view go on to the head, verify lists the skip and finds no drift, and a rebuild passes
    over the still-poisonous event again."""
    poison = _poisoned(container)
    head = container.app.position()
    container.start(projections=True)
    _until(lambda: bool(container.dead_letters.all()))
    wrong = run(clean_database, "projections", "skip", "topics", str(poison + 1), "--reason", "x")
    assert wrong.returncode == 2
    assert "is not an open dead letter of topics" in wrong.stderr
    skipped = run(
        clean_database, "projections", "skip", "topics", str(poison), "--reason", "bad owner"
    )
    assert skipped.returncode == 0, skipped.stderr
    _until(lambda: container.views["topics"].position() == head)
    (letter,) = container.dead_letters.all("topics")
    assert (letter.status, letter.reason, letter.skipped_by) == (
        SKIPPED,
        "bad owner",
        "operator:cli",
    )
    verified = run(clean_database, "projections", "verify", "topics")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"position {poison} skipped by operator:cli: bad owner" in verified.stdout
    assert "identical to a replay" in verified.stdout
    container.close()
    rebuilt = run(clean_database, "projections", "rebuild", "topics")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"rebuilt topics to position {head}" in rebuilt.stdout
