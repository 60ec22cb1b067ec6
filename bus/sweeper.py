"""The lease sweeper: appends LeaseExpired for leases past their expiry, so the bus can retry."""

from __future__ import annotations

import threading
import uuid

import psycopg
import structlog

from bus.governor import Governor
from domain.application import StateOwner
from domain.errors import ConcurrentUpdate, NotFound, StateConflict
from domain.values import By
from projections.background import Background
from projections.follower import try_advisory_lock
from projections.queries import Queries

log = structlog.get_logger(__name__)

SWEEPER_ACTOR = "system:sweeper"
SWEEP_BATCH = 200


class LeaseSweeper(Background):
    """One active sweeper across processes (an advisory lock); candidates come from item_status
    and the item aggregate decides, so a lease renewed or finished meanwhile is left alone."""

    name = "sweeper"
    thread_name = "lease-sweeper"

    def __init__(
        self,
        app: StateOwner,
        queries: Queries,
        conninfo: str,
        interval_seconds: float,
        governor: Governor | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.queries = queries
        self.conninfo = conninfo
        self.interval_seconds = interval_seconds
        self.governor = governor
        self.expired = 0
        self.error: str | None = None
        self.standby = False
        self.running = False
        self._wake = threading.Event()

    def request_stop(self) -> None:
        super().request_stop()
        self._wake.set()

    def sweep_now(self) -> None:
        self._wake.set()

    def sweep(self) -> int:
        """Expire every lease past its time, and revoke those whose holder may no longer hold
        them; returns how many leases it ended."""
        expired = self.queries.expired_leases(self.app.clock(), SWEEP_BATCH)
        revocable = self.queries.leases_out_of_scope(SWEEP_BATCH)
        return sum(self._expire(item_id) for item_id in expired) + sum(
            self._revoke(item_id, lease_id) for item_id, lease_id in revocable
        )

    def _revoke(self, item_id: uuid.UUID, lease_id: str) -> bool:
        try:
            self.app.revoke_lease(item_id, lease_id, self._by())
        except (StateConflict, ConcurrentUpdate, NotFound):
            return False  # the lease ended meanwhile, or its holder may hold it after all
        return True

    def _by(self) -> By:
        return By(SWEEPER_ACTOR, f"sweep-{uuid.uuid4().hex[:12]}")

    def _expire(self, item_id: uuid.UUID) -> bool:
        try:
            self.app.expire_lease(item_id, self._by())
        except (StateConflict, ConcurrentUpdate, NotFound):
            return False  # renewed, finished or cancelled since the row was read
        self.expired += 1
        return True

    def _run(self) -> None:
        self.running = True
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    while not self._stopping.is_set():
                        self.standby = not try_advisory_lock(conn, self.name)
                        if not self.standby:
                            break
                        self._stopping.wait(self.interval_seconds)
                    while not self._stopping.is_set():
                        self.sweep()
                        if self.governor is not None:
                            self.governor.check()  # a safety net for crossings a crash let slip
                        self.error = None
                        self._wake.wait(self.interval_seconds)
                        self._wake.clear()
            except Exception as error:  # keep sweeping after any one failure, visibly
                self.error = f"{type(error).__name__}: {error}"
                log.error("sweeper_failed", error=self.error)
                self._stopping.wait(1.0)
        self.running = False
