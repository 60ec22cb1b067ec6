"""Group commit: writers that arrive while a batch is in flight go together in the next one,
and each is answered with its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from store.group_commit import GroupCommit

pytestmark = pytest.mark.unit


class Gate:
    """A flush that records each batch and holds the first until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def flush(self, requests: Sequence[str]) -> list[str | Exception]:
        self.batches.append(list(requests))
        if len(self.batches) == 1:
            self.first_started.set()
            self.release.wait(5)
        return [ValueError(r) if r.startswith("bad") else r.upper() for r in requests]


def _submit_in_threads(
    group: GroupCommit[str, str], requests: list[str]
) -> tuple[list[threading.Thread], dict[str, object]]:
    answers: dict[str, object] = {}

    def submit(request: str) -> None:
        try:
            answers[request] = group.submit(request)
        except ValueError as error:
            answers[request] = error

    threads = [threading.Thread(target=submit, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    return threads, answers


def _wait_until_queued(group: GroupCommit[str, str], count: int) -> None:
    for _ in range(5000):
        if group.queued >= count:
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"{group.queued} of {count} writers queued")


def test_a_lone_writer_flushes_its_own_append_at_once() -> None:
    """With nothing in flight, a submit is one batch of one, answered with its own result."""
    gate = Gate()
    gate.release.set()
    group = GroupCommit(gate.flush)
    assert group.submit("a") == "A"
    assert gate.batches == [["a"]]


def test_writers_arriving_during_a_flush_go_together_in_the_next() -> None:
    """Five writers queued behind an in-flight batch are flushed as one batch, each answered."""
    gate = Gate()
    group = GroupCommit(gate.flush)
    first, answers = _submit_in_threads(group, ["first"])
    assert gate.first_started.wait(5)
    queued, more = _submit_in_threads(group, [f"w{n}" for n in range(5)])
    _wait_until_queued(group, 5)
    gate.release.set()
    for thread in first + queued:
        thread.join(5)
    assert gate.batches[0] == ["first"]
    assert sorted(gate.batches[1]) == [f"w{n}" for n in range(5)]
    assert answers == {"first": "FIRST"}
    assert more == {f"w{n}": f"W{n}" for n in range(5)}
    assert (group.batches, group.appends) == (2, 6)


def test_a_refused_append_fails_alone() -> None:
    """One writer's error reaches that writer only; its neighbours in the batch succeed."""
    gate = Gate()
    group = GroupCommit(gate.flush)
    first, _ = _submit_in_threads(group, ["first"])
    assert gate.first_started.wait(5)
    queued, answers = _submit_in_threads(group, ["ok1", "bad", "ok2"])
    _wait_until_queued(group, 3)
    gate.release.set()
    for thread in first + queued:
        thread.join(5)
    assert isinstance(answers["bad"], ValueError)
    assert (answers["ok1"], answers["ok2"]) == ("OK1", "OK2")


def test_a_batch_that_fails_as_a_whole_fails_each_writer_and_the_next_goes_on() -> None:
    """A flush that raises answers every writer in it with that error; later writers flush."""
    calls: list[list[str]] = []

    def flush(requests: Sequence[str]) -> list[str | Exception]:
        calls.append(list(requests))
        if len(calls) == 1:
            raise ValueError("connection lost")
        return [r.upper() for r in requests]

    group = GroupCommit(flush)
    with pytest.raises(ValueError, match="connection lost"):
        group.submit("a")
    assert group.submit("b") == "B"


def test_a_batch_holds_at_most_max_batch_writers() -> None:
    """Writers beyond the cap wait for the batch after."""
    gate = Gate()
    group = GroupCommit(gate.flush, max_batch=2)
    first, _ = _submit_in_threads(group, ["first"])
    assert gate.first_started.wait(5)
    queued, answers = _submit_in_threads(group, ["a", "b", "c"])
    _wait_until_queued(group, 3)
    gate.release.set()
    for thread in first + queued:
        thread.join(5)
    assert [len(batch) for batch in gate.batches] == [1, 2, 1]
    assert answers == {"a": "A", "b": "B", "c": "C"}
