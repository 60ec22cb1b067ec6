"""The lease sweeper: appends LeaseExpired for leases past their expiry, so the bus can retry."""

from __future__ import annotations

import uuid

from bus.exclusive import ExclusiveLoop
from bus.governor import Governor
from domain.application import StateOwner
from domain.errors import ConcurrentUpdate, NotFound, StateConflict
from domain.values import By
from projections.queries import Queries

SWEEPER_ACTOR = "system:sweeper"
SWEEP_BATCH = 200


class LeaseSweeper(ExclusiveLoop):
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
        super().__init__(conninfo, standby_retry_seconds=interval_seconds)
        self.app = app
        self.queries = queries
        self.interval_seconds = interval_seconds
        self.governor = governor
        self.expired = 0

    def sweep_now(self) -> None:
        self.wake()

    def tick(self) -> float:
        self.sweep()
        if self.governor is not None:
            self.governor.check()  # a safety net for crossings a crash let slip
        return self.interval_seconds

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
