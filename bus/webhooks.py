"""Incident webhooks out: sender workers post the outbox's deliveries, signed, each webhook on its
own worker so that one slow or dead endpoint delays only its own; and a watchdog that turns a
follower stalled behind the log into a `FollowerStalled` incident."""

from __future__ import annotations

import hashlib
import hmac
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from projections.background import Background
from projections.follower import Follower
from projections.webhooks import FOLLOWER_STALLED, Delivery, Webhooks

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Stateowner-Signature"
DELIVERY_HEADER = "X-Stateowner-Delivery"
EVENT_HEADER = "X-Stateowner-Event"
POLL_SECONDS = 0.5


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: the HMAC-SHA256 of the body under the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Retries:
    """How often and how soon a failed delivery is tried again before it is dead."""

    max_attempts: int = 8
    base_seconds: float = 1.0
    max_seconds: float = 600.0

    def delay(self, attempt: int) -> float | None:
        """Seconds before the next try after `attempt` failed ones, or None: dead. Exponential,
        with jitter (half the step fixed, half random) so endpoints that come back are not
        hit by every delivery at once."""
        if attempt >= self.max_attempts:
            return None
        step = min(self.base_seconds * 2.0 ** min(attempt - 1, 40), self.max_seconds)
        return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not a secret


class WebhookSender(Background):
    """Finds webhooks with deliveries due and drains each on a worker of its own: at most one
    worker per webhook, `workers` at once, every post bounded by `timeout_seconds`."""

    thread_name = "webhook-sender"

    def __init__(
        self,
        store: Webhooks,
        retries: Retries,
        timeout_seconds: float,
        workers: int,
        on_sent: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.retries = retries
        self.timeout = httpx.Timeout(timeout_seconds)
        self.hold_seconds = timeout_seconds * 2 + 5
        self.workers = workers
        self.on_sent = on_sent
        self._wake = threading.Event()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self.error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        super().request_stop()
        self._wake.set()

    def _run(self) -> None:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="webhook") as pool:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    due = self.store.due()
                    self.error = None
                except Exception as error:  # the database is away: try again shortly
                    self.error = f"{type(error).__name__}: {error}"
                    log.warning("webhook_sender_failed", error=self.error)
                    due = []
                for name in due:
                    with self._lock:
                        if name in self._busy or len(self._busy) >= self.workers:
                            continue
                        self._busy.add(name)
                    pool.submit(self._drain, name)
                self._wake.wait(POLL_SECONDS)

    def _drain(self, name: str) -> None:
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
                while not self._stopping.is_set():
                    delivery = self.store.claim(name, self.hold_seconds)
                    if delivery is None:
                        return
                    self._send(client, delivery)
        except Exception as error:  # a worker outlives nothing: the next poll drains again
            log.warning("webhook_worker_failed", webhook=name, error=f"{type(error).__name__}")
        finally:
            with self._lock:
                self._busy.discard(name)
            self._wake.set()

    def _send(self, client: httpx.Client, delivery: Delivery) -> None:
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stateowner-webhooks/1",
            DELIVERY_HEADER: str(delivery.id),
            EVENT_HEADER: delivery.event_type,
            SIGNATURE_HEADER: signature(delivery.secret, body),
        }
        status: int | None = None
        try:
            response = client.post(delivery.url, content=body, headers=headers)
            status = response.status_code
            if 200 <= status < 300:
                self.store.delivered(delivery, status)
                self._count(delivery, "delivered")
                return
            error = f"the endpoint answered HTTP {status}"
        except httpx.HTTPError as failure:
            # The exception's class says what happened; its text may repeat the URL, which
            # may carry credentials, so it is not kept.
            error = f"{type(failure).__name__}: the endpoint could not be reached in time"
        except Exception as failure:  # an URL httpx cannot use, say: still a failed try
            error = f"{type(failure).__name__}: the URL cannot be posted to"
        attempt = delivery.attempts + 1
        retry_in = self.retries.delay(attempt)
        self.store.failed(delivery, status, error, retry_in)
        self._count(delivery, "failed" if retry_in is not None else "dead")
        log.warning(
            "webhook_delivery_failed",
            webhook=delivery.webhook,
            delivery_id=str(delivery.id),
            attempt=attempt,
            error=error,
            dead=retry_in is None,
        )

    def _count(self, delivery: Delivery, result: str) -> None:
        if self.on_sent is not None:
            self.on_sent(delivery.webhook, result)


class FollowerWatchdog(Background):
    """Raises `FollowerStalled` for a follower of this process that is behind the log and has
    not moved for `stall_seconds`: once per position it is stuck at."""

    thread_name = "follower-watchdog"

    def __init__(
        self,
        followers: Callable[[], Sequence[Follower]],
        head: Callable[[], int],
        store: Webhooks,
        stall_seconds: float,
        on_raised: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.followers = followers
        self.head = head
        self.store = store
        self.stall_seconds = stall_seconds
        self.interval = min(max(stall_seconds / 4, 0.05), 5.0)
        self.on_raised = on_raised
        self._seen: dict[str, tuple[int, float]] = {}
        self._raised: dict[str, int] = {}

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.check(time.monotonic())
            except Exception as error:  # the database is away: look again next time
                log.warning("watchdog_failed", error=f"{type(error).__name__}: {error}")

    def check(self, now: float) -> list[str]:
        """Look at every follower once; returns the names of those raised as stalled now."""
        head = self.head()
        raised = []
        for follower in self.followers():
            state = follower.state
            if not state.running or state.standby:
                continue
            position = state.position
            seen = self._seen.get(follower.name)
            if seen is None or seen[0] != position:
                self._seen[follower.name] = (position, now)
                continue
            stuck_for = now - seen[1]
            if head <= position or stuck_for < self.stall_seconds:
                continue
            if self._raised.get(follower.name) == position:
                continue
            self._raised[follower.name] = position
            raised.append(follower.name)
            self._raise(follower, position, head, stuck_for)
        return raised

    def _raise(self, follower: Follower, position: int, head: int, stuck_for: float) -> None:
        payload: dict[str, Any] = {
            "type": FOLLOWER_STALLED,
            "position": None,
            "at": datetime.now(UTC).isoformat(),
            "data": {
                "follower": follower.name,
                "position": position,
                "head": head,
                "lag": head - position,
                "stalled_seconds": round(stuck_for, 1),
                "error": follower.state.error,
            },
        }
        log.warning("follower_stalled", follower=follower.name, position=position, head=head)
        self.store.enqueue(FOLLOWER_STALLED, f"stalled:{follower.name}:{position}", payload)
        if self.on_raised is not None:
            self.on_raised()
