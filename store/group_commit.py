"""Group commit: concurrent writers' appends go to the database together, as one transaction.

A writer that finds no batch in flight flushes its own append at once, on its own thread, so a
lone writer waits for nothing. Writers that arrive while a batch is in flight queue; when it
lands, the first of them flushes everything queued, in one call. Each writer is answered with
its own outcome — its positions, or the error that refused its append alone — and only once the
batch holding it is durable. Leadership passes on after every batch, so no writer's answer waits
while it flushes the work of others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")

Flush = Callable[[Sequence[Request]], Sequence[Result | Exception]]


@dataclass(eq=False)
class _Writer(Generic[Request, Result]):
    request: Request
    woken: threading.Event = field(default_factory=threading.Event)
    answered: bool = False
    result: Result | None = None
    error: BaseException | None = None

    def answer(self, outcome: Result | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self.error = outcome
        else:
            self.result = outcome
        self.answered = True

    def outcome(self) -> Result:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit(Generic[Request, Result]):
    def __init__(self, flush: Flush[Request, Result], max_batch: int = 256) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Writer[Request, Result]] = []
        self._flushing = False
        self.batches = 0
        self.appends = 0

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def submit(self, request: Request) -> Result:
        """Append `request` with whatever else is waiting; return its own outcome."""
        writer: _Writer[Request, Result] = _Writer(request)
        with self._lock:
            self._queue.append(writer)
            leads = not self._flushing
            self._flushing = True
        if not leads:
            writer.woken.wait()
            if writer.answered:
                return writer.outcome()
        self._lead()
        return writer.outcome()

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            outcomes: Sequence[Result | BaseException] = self._flush([w.request for w in batch])
        except BaseException as error:  # the batch as a whole failed: so did each of its appends
            outcomes = [error] * len(batch)
        for writer, outcome in zip(batch, outcomes, strict=True):
            writer.answer(outcome)
        with self._lock:
            self.batches += 1
            self.appends += len(batch)
            if self._queue:
                self._queue[0].woken.set()  # the next writer in line flushes the next batch
            else:
                self._flushing = False
        for writer in batch:
            writer.woken.set()
