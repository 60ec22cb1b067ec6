"""A run's trace, as a job builds it: tool calls with their durations, and attributes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class ToolCall:
    """One call a job made; set `output` inside the `with` block. An exception leaving the block
    is recorded as the call's `error` (and goes on)."""

    name: str
    input: Any = None
    output: Any = None
    error: str | None = None
    started_at: str = ""
    duration_ms: float = 0.0
    attributes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "input": self.input,
            "output": self.output,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 3),
        }
        if self.error is not None:
            body["error"] = self.error
        if self.attributes:
            body["attributes"] = self.attributes
        return body


class Trace:
    """Collects what a job did; the Worker sends it as the run's `trace`:
    `{"tool_calls": [...], **attributes}`. Safe to use from a job's own threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tool_calls: list[ToolCall] = []
        self.attributes: dict[str, Any] = {}

    @contextmanager
    def tool(self, name: str, *, input: Any = None, **attributes: Any) -> Iterator[ToolCall]:
        call = ToolCall(name, input, attributes=attributes)
        call.started_at = datetime.now(UTC).isoformat()
        started = time.perf_counter()
        try:
            yield call
        except BaseException as error:
            call.error = f"{type(error).__name__}: {error}"
            raise
        finally:
            call.duration_ms = (time.perf_counter() - started) * 1000
            with self._lock:
                self.tool_calls.append(call)

    def set(self, **attributes: Any) -> None:
        """Attributes of the whole run, e.g. `model="…"`."""
        with self._lock:
            self.attributes.update(attributes)

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.attributes,
                "tool_calls": [call.as_json() for call in self.tool_calls],
            }
