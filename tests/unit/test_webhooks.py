"""Unit tests of the webhooks' pure parts: the signature, the retry schedule, the event types a
webhook may ask for, and the payload of a log event."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from bus.webhooks import Retries, signature
from domain.application import StateOwner
from domain.values import By
from projections.webhooks import delivery_id, encode, event_payload, event_types

pytestmark = pytest.mark.unit


def test_the_signature_is_the_hmac_sha256_of_the_body_under_the_secret() -> None:
    """`sha256=` and the hex digest, as a receiver recomputes it."""
    body = b'{"type":"ItemParked"}'
    expected = hmac.new(b"secret", body, hashlib.sha256).hexdigest()
    assert signature("secret", body) == f"sha256={expected}"


def test_retries_back_off_exponentially_with_jitter_then_give_up() -> None:
    """Each wait lies between half and all of a doubling step, capped; the last try is dead."""
    retries = Retries(max_attempts=5, base_seconds=1, max_seconds=4)
    for attempt, step in [(1, 1), (2, 2), (3, 4), (4, 4)]:
        for _ in range(50):
            delay = retries.delay(attempt)
            assert delay is not None
            assert step / 2 <= delay <= step
    assert retries.delay(5) is None


def test_a_webhook_may_ask_for_the_logs_event_types_and_the_services_incidents() -> None:
    """Every aggregate's events, FollowerStalled; not the abstract bases."""
    known = event_types()
    assert {"ItemParked", "ItemHalted", "BudgetAlerted", "BreakerOpened", "LeaseExpired"} <= known
    assert {"ItemRewound", "FollowerStalled", "StageReady"} <= known
    assert not {"LeaseEnded", "LeaseReported", "ItemStopped", "Recorded"} & known


def test_a_delivery_carries_the_event_as_the_log_shows_it_and_its_id_is_derived() -> None:
    """The payload names type, position, item and actor, and leaves secrets' digests out; the
    same webhook and position always give the same delivery id."""
    app = StateOwner(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    by = By("operator:ops", "req-1")
    app.put_pipeline("p", {"stages": [{"name": "a"}]}, by)
    event = next(iter(app.events.get(app.pipeline("p").id)))
    payload = json.loads(encode(event_payload(event, 7)))
    assert (payload["type"], payload["position"], payload["actor"]) == (
        "PipelineDefined",
        7,
        "operator:ops",
    )
    assert payload["item_id"] is None
    assert payload["data"]["name"] == "p"
    assert delivery_id("hook", "position:7") == delivery_id("hook", "position:7")
    assert delivery_id("hook", "position:7") != delivery_id("other", "position:7")
