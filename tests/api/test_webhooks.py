"""Incident webhooks against a real `stateowner serve` and a real receiver on loopback: signed
deliveries, retried with backoff until they land or die, dead ones re-driven, and one endpoint
that hangs never delaying another."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import LiveService, own_service
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.api

SECRET = "s3cret-of-the-ops-team"


@pytest.fixture(scope="module")
def live(server_conninfo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with own_service(
        server_conninfo,
        Path(tmp_path_factory.mktemp("webhooks")),
        STATEOWNER_WEBHOOK_BACKOFF_SECONDS="0.2",
        STATEOWNER_WEBHOOK_MAX_ATTEMPTS="3",
        STATEOWNER_WEBHOOK_TIMEOUT_SECONDS="1",
    ) as service:
        with service.client() as admin:
            spec = {"stages": [{"name": "work", "max_attempts": 1}]}
            admin.put("/v1/pipelines/fragile", json=spec).raise_for_status()
            admin.post(
                "/v1/agents", json={"name": "worker", "role": "agent", "stages": ["work"]}
            ).raise_for_status()
        yield service


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def admin(live: LiveService) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def put_webhook(admin: httpx.Client, name: str, url: str, events: list[str]) -> dict[str, Any]:
    response = admin.put(
        f"/v1/webhooks/{name}", json={"url": url, "events": events, "secret": SECRET}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def park_an_item(live: LiveService, admin: httpx.Client) -> str:
    """An item whose only stage fails for good: the guards park it (the oldest ready one, as
    claims hand them out)."""
    item = admin.post("/v1/items", json={"pipeline": "fragile", "topic": "t", "title": "x"})
    assert item.status_code == 201, item.text
    token = admin.post("/v1/agents/worker/rotate").json()["token"]
    with live.client(token) as worker:
        lease = worker.post("/v1/claims", json={"stage": "work", "wait_seconds": 5}).json()
        failed = worker.post(
            f"/v1/leases/{lease['lease']['id']}/fail", json={"error": "no", "retryable": False}
        )
        assert failed.status_code == 200, failed.text
    item_id: str = lease["item"]["id"]
    return item_id


def deliveries(admin: httpx.Client, name: str) -> list[dict[str, Any]]:
    response = admin.get(f"/v1/webhooks/{name}/deliveries")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def signed(body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_a_receiver_that_fails_twice_gets_the_delivery_on_the_third_try_with_a_valid_signature(
    live: LiveService, admin: httpx.Client, receiver: WebhookReceiver
) -> None:
    """An item parks; the on-call endpoint answers 500 twice, then takes the third try: the
    same delivery each time, signed with the secret, and the delivery shows as delivered."""
    put_webhook(admin, "oncall", receiver.endpoint("/oncall", failures=2), ["ItemParked"])
    item_id = park_an_item(live, admin)

    tries = wait_until(
        lambda: len(receiver.at("/oncall")) >= 3 and receiver.at("/oncall"), "3 tries"
    )
    assert len({t.headers["X-Stateowner-Delivery"] for t in tries}) == 1
    assert all(signed(t.body, t.headers["X-Stateowner-Signature"]) for t in tries)
    payload = json.loads(tries[-1].body)
    assert (payload["type"], payload["item_id"], payload["webhook"]) == (
        "ItemParked",
        item_id,
        "oncall",
    )
    assert payload["delivery_id"] == tries[0].headers["X-Stateowner-Delivery"]
    assert payload["data"]["reason"] == "failed"
    assert tries[1].at - tries[0].at >= 0.1  # backed off between tries

    (delivery,) = wait_until(
        lambda: [d for d in deliveries(admin, "oncall") if d["status"] == "delivered"],
        "delivered",
    )
    assert (delivery["attempts"], delivery["last_status"], delivery["item_id"]) == (
        3,
        200,
        item_id,
    )
    shown = admin.get("/v1/webhooks/oncall")
    assert shown.json()["deliveries"] == {"pending": 0, "delivered": 1, "dead": 0}
    for answer in (shown, admin.get("/v1/webhooks"), admin.get("/v1/webhooks/oncall/deliveries")):
        assert SECRET not in answer.text
        assert "secret" not in answer.text
    assert SECRET not in (live.workdir / "serve.log").read_text()


def test_a_dead_delivery_is_visible_and_re_driven(
    live: LiveService, admin: httpx.Client, receiver: WebhookReceiver
) -> None:
    """An endpoint that is down gets three tries, then the delivery is dead, with the last
    answer; once the endpoint is back, an operator re-drives it and it lands."""
    put_webhook(admin, "pager", receiver.endpoint("/pager", down=True), ["ItemCreated"])
    admin.post("/v1/items", json={"pipeline": "fragile", "topic": "t", "title": "y"})

    (dead,) = wait_until(
        lambda: [d for d in deliveries(admin, "pager") if d["status"] == "dead"], "dead"
    )
    assert (dead["attempts"], dead["last_status"]) == (3, 503)
    assert "503" in dead["last_error"]
    assert dead["next_attempt_at"] is None
    assert len(receiver.at("/pager")) == 3
    dead_only = admin.get("/v1/webhooks/pager/deliveries", params={"status": "dead"})
    assert [d["id"] for d in dead_only.json()["deliveries"]] == [dead["id"]]

    receiver.heal("/pager")
    redriven = admin.post(f"/v1/webhooks/pager/deliveries/{dead['id']}/redrive")
    assert redriven.status_code == 200, redriven.text
    assert (redriven.json()["status"], redriven.json()["attempts"]) == ("pending", 0)
    wait_until(
        lambda: [d for d in deliveries(admin, "pager") if d["status"] == "delivered"], "redriven"
    )
    fourth = receiver.at("/pager")[-1]
    assert fourth.headers["X-Stateowner-Delivery"] == dead["id"]
    assert signed(fourth.body, fourth.headers["X-Stateowner-Signature"])

    again = admin.post(f"/v1/webhooks/pager/deliveries/{uuid.uuid4()}/redrive")
    assert (again.status_code, again.json()["code"]) == (404, "not_found")


def test_one_endpoint_that_hangs_does_not_delay_another(
    live: LiveService, admin: httpx.Client, receiver: WebhookReceiver
) -> None:
    """Two webhooks on the same event: one endpoint never answers in time, the other gets its
    delivery at once, and the item itself moves on as ever."""
    put_webhook(admin, "slow", receiver.endpoint("/slow", delay=5), ["ItemParked"])
    put_webhook(admin, "fast", receiver.endpoint("/fast"), ["ItemParked"])
    park_an_item(live, admin)
    wait_until(lambda: receiver.at("/slow"), "the slow endpoint hanging")

    started = time.monotonic()
    item_id = park_an_item(live, admin)
    wait_until(lambda: len(receiver.at("/fast")) == 2, "the fast endpoint", timeout=10)
    fast = receiver.at("/fast")[-1]
    assert fast.at - started < 2
    assert json.loads(fast.body)["item_id"] == item_id
    assert not [d for d in deliveries(admin, "slow") if d["status"] == "delivered"]
    created = admin.post("/v1/items", json={"pipeline": "fragile", "topic": "t", "title": "z"})
    assert created.status_code == 201
    position = created.json()["position"]
    shown = admin.get(f"/v1/items/{created.json()['id']}", params={"min_position": position})
    assert shown.json()["status"] == "ready"
    (slow,) = wait_until(
        lambda: [d for d in deliveries(admin, "slow") if d["last_error"]], "a timeout recorded"
    )
    assert "ReadTimeout" in slow["last_error"]
    admin.delete("/v1/webhooks/slow")


def test_bad_webhooks_are_refused_naming_the_field(admin: httpx.Client) -> None:
    """A URL that is not http(s), an unknown event type, a short secret: 422 naming each;
    unknown webhooks are 404; a deleted one is gone with its deliveries."""
    cases = [
        ({"url": "ftp://example.com/x", "events": ["ItemParked"], "secret": SECRET}, "body.url"),
        ({"url": "http://x", "events": ["ItemExploded"], "secret": SECRET}, "body.events.0"),
        ({"url": "http://x", "events": [], "secret": SECRET}, "body.events"),
        ({"url": "http://x", "events": ["ItemParked"], "secret": "short"}, "body.secret"),
    ]
    for body, location in cases:
        response = admin.put("/v1/webhooks/bad", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert [e["location"] for e in response.json()["errors"]] == [location]
    assert admin.get("/v1/webhooks/bad").status_code == 404
    assert admin.get("/v1/webhooks/bad/deliveries").status_code == 404
    put_webhook(admin, "brief", "https://example.invalid/hook", ["FollowerStalled"])
    assert admin.delete("/v1/webhooks/brief").status_code == 204
    assert admin.delete("/v1/webhooks/brief").status_code == 404


def test_the_sdk_manages_webhooks_and_reads_their_deliveries(
    live: LiveService, receiver: WebhookReceiver
) -> None:
    """put, get, list, deliveries, delete through stateowner_client, as an operator's script
    would; a missing webhook is the NotFound the code names."""
    from stateowner_client import Client, NotFound
    from tests.conftest import ADMIN_TOKEN

    with Client(live.base, token=ADMIN_TOKEN) as ops:
        hook = ops.put_webhook("sdk", receiver.endpoint("/sdk"), ["ItemCreated"], SECRET)
        assert (hook.name, hook.events, hook.deliveries.pending) == ("sdk", ["ItemCreated"], 0)
        assert "sdk" in [h.name for h in ops.list_webhooks()]
        item = ops.create_item("fragile", "t", "from the sdk", {})
        (delivery,) = wait_until(
            lambda: [d for d in ops.webhook_deliveries("sdk") if d.status == "delivered"],
            "delivered",
        )
        assert (delivery.event_type, delivery.item_id) == ("ItemCreated", item.id)
        ops.delete_webhook("sdk")
        with pytest.raises(NotFound):
            ops.get_webhook("sdk")
