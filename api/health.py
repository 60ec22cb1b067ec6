"""Whether the database answers. Requests fail fast with 503 while it does not, instead of each
waiting out connection timeouts and retries; a probe notices its return and revives the pools."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import structlog

log = structlog.get_logger(__name__)

PROBE_INTERVAL_SECONDS = 0.25


class DatabaseHealth:
    def __init__(self, conninfo: str, revive: Callable[[], None]) -> None:
        self.conninfo = conninfo
        self.revive = revive
        self._ok = threading.Event()
        self._ok.set()
        self._lock = threading.Lock()
        self._probing = False
        self._stopping = threading.Event()

    @property
    def ok(self) -> bool:
        return self._ok.is_set()

    def lost(self, reason: str) -> None:
        with self._lock:
            if self._probing or self._stopping.is_set():
                return
            self._probing = True
            self._ok.clear()
        log.warning("database_lost", reason=reason)
        threading.Thread(target=self._probe, name="database-probe", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()

    def _probe(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                self.revive()
            except Exception:  # still down: probe again shortly
                self._stopping.wait(PROBE_INTERVAL_SECONDS)
                continue
            with self._lock:
                self._probing = False
                self._ok.set()
            log.info("database_back")
            return
