"""A follower that stops making progress behind the log is an incident: the watchdog raises
FollowerStalled once, and the webhooks that asked for it receive it, signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from api.container import EVENTS_CHANNEL, Container
from api.settings import Settings
from domain.values import By
from projections.follower import Follower, LogSource
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "watchdog-secret"


class Stuck:
    """A follower's handler that cannot get past the first event it is given."""

    name = "stuck"

    def position(self) -> int:
        return 0

    def process_batch(self, batch: Sequence[tuple[Any, int]], after: int) -> None:
        raise RuntimeError("cannot apply this event")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def running(settings: Settings) -> Iterator[Container]:
    container = Container(settings.model_copy(update={"follower_stall_seconds": 0.5}))
    container.start(bus=True)
    try:
        yield container
    finally:
        container.close()


def test_a_stalled_follower_is_raised_once_to_the_webhooks_that_asked(
    running: Container, receiver: WebhookReceiver
) -> None:
    """A follower stuck at position 0 behind a log with events is reported as stalled, once,
    with its name, position, lag and error, to the webhook on FollowerStalled."""
    running.webhooks.put(
        "ops", receiver.endpoint("/ops"), ["FollowerStalled"], SECRET, "operator:test"
    )
    running.app.put_pipeline("p", {"stages": [{"name": "a"}]}, By("operator:test", "t"))
    source = LogSource(
        running.app.recorder, running.app.mapper, running.database.conninfo, EVENTS_CHANNEL
    )
    stuck = Follower(Stuck(), source)  # type: ignore[arg-type]
    running.followers.append(stuck)
    stuck.start()
    try:
        deadline = time.monotonic() + 20
        while not receiver.at("/ops"):
            assert time.monotonic() < deadline, "no FollowerStalled delivered"
            time.sleep(0.05)
        time.sleep(1.5)  # the watchdog looks again: the same stall is not raised twice
    finally:
        stuck.stop()
    (delivery,) = receiver.at("/ops")
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert delivery.headers["X-Stateowner-Signature"] == expected
    payload = json.loads(delivery.body)
    assert payload["type"] == "FollowerStalled"
    data = payload["data"]
    assert (data["follower"], data["position"]) == ("stuck", 0)
    assert data["lag"] >= 1
    assert "cannot apply this event" in data["error"]
