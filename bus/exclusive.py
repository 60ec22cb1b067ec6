"""A loop that runs in one process at a time across the deployment: the others stand by."""

from __future__ import annotations

import threading

import psycopg
import structlog

from projections.background import Background
from projections.follower import try_advisory_lock

log = structlog.get_logger(__name__)


class ExclusiveLoop(Background):
    """Holds an advisory lock on a connection of its own while it works, and calls `tick` until
    stopped; a standby takes over when the holder's connection goes. Any failure is shown in
    `error` and logged, and the loop starts again from connecting."""

    name = "exclusive"

    def __init__(self, conninfo: str, standby_retry_seconds: float) -> None:
        super().__init__()
        self.conninfo = conninfo
        self.standby_retry_seconds = standby_retry_seconds
        self.error: str | None = None
        self.standby = False
        self._wake = threading.Event()

    def tick(self) -> float:
        """Do one round of work; return how long to sleep before the next (a wake cuts it)."""
        raise NotImplementedError

    def request_stop(self) -> None:
        super().request_stop()
        self._wake.set()

    def wake(self) -> None:
        """Work now instead of at the end of the sleep."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    while not self._stopping.is_set():
                        self.standby = not try_advisory_lock(conn, self.name)
                        if not self.standby:
                            break
                        self._stopping.wait(self.standby_retry_seconds)
                    while not self._stopping.is_set():
                        sleep = self.tick()
                        self.error = None
                        # The lock lives with this connection: a dead one must end this round.
                        conn.execute("SELECT 1")
                        self._wake.wait(sleep)
                        self._wake.clear()
            except Exception as error:  # keep working after any one failure, visibly
                self.error = f"{type(error).__name__}: {error}"
                log.error(f"{self.name}_failed", error=self.error)
                self._stopping.wait(1.0)
