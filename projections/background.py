"""A loop in a daemon thread, started and stopped by its owner."""

from __future__ import annotations

import threading


class Background:
    """Runs `_run` in a daemon thread; `_run` loops until `_stopping` is set."""

    thread_name = "background"
    join_seconds = 10.0

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the loop to stop without waiting for it, so several can stop at once."""
        self._stopping.set()

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(self.join_seconds)

    def _run(self) -> None:
        raise NotImplementedError
