"""The console's incident pages in chromium: an operator finds a webhook's dead delivery and
re-drives it, rewinds a done item and forks it; an auditor is shown none of it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import sign_in
from tests.browser.story import Story
from tests.live import LiveService, own_service
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def service(
    server_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    """The console's server, with deliveries that die after two quick tries."""
    with own_service(
        server_conninfo,
        Path(tmp_path_factory.mktemp("incidents")),
        STATEOWNER_WEBHOOK_BACKOFF_SECONDS="0.1",
        STATEOWNER_WEBHOOK_MAX_ATTEMPTS="2",
        STATEOWNER_WEBHOOK_TIMEOUT_SECONDS="1",
    ) as live:
        yield live


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


def accept_dialogs(page: Page) -> list[str]:
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return asked


def events(story: Story, item_id: str) -> list[dict[str, Any]]:
    with story.client() as admin:
        found: list[dict[str, Any]] = admin.get(f"/v1/items/{item_id}/events").json()["events"]
    return found


def test_an_operator_finds_a_dead_delivery_and_re_drives_it(
    page: Page, story: Story, receiver: WebhookReceiver
) -> None:
    """The pager endpoint is down, so the delivery dies; the operator opens Webhooks, the
    webhook, sees the dead delivery with its last answer, and re-drives it once it is back."""
    url = receiver.endpoint("/pager", down=True)
    body = {"url": url, "events": ["ItemCreated"], "secret": "browser-secret"}
    story.call(None, "PUT", "/v1/webhooks/pager", json=body)
    story.create("researcher", "article", "ops", "A new item pages someone")
    deadline = time.monotonic() + 20
    while not story.call(None, "GET", "/v1/webhooks/pager")["deliveries"]["dead"]:
        assert time.monotonic() < deadline, "the delivery never died"
        time.sleep(0.05)

    asked = accept_dialogs(page)
    sign_in(page, story.tokens["ops"])
    page.locator("header.top nav").get_by_role("link", name="Webhooks", exact=True).click()
    expect(page.locator("main h1")).to_contain_text("Webhooks")
    expect(page.locator("tr[data-webhook=pager]")).to_contain_text(url)
    page.get_by_role("link", name="pager").click()
    dead = page.locator("#deliveries tr[data-status=dead]")
    expect(dead).to_have_count(1)
    expect(dead).to_contain_text("HTTP 503")
    expect(page.locator("main")).not_to_contain_text("browser-secret")

    receiver.heal("/pager")
    dead.get_by_role("button", name="Re-drive").click()
    expect(page.locator(".flash.ok")).to_contain_text("Re-driven")
    assert asked
    assert "Send this delivery again" in asked[0]
    deadline = time.monotonic() + 20
    while not story.call(None, "GET", "/v1/webhooks/pager")["deliveries"]["delivered"]:
        assert time.monotonic() < deadline, "the re-driven delivery never landed"
        time.sleep(0.05)
    page.reload()
    expect(page.locator("#deliveries tr[data-status=delivered]")).to_have_count(1)


def test_an_operator_rewinds_a_done_item_and_forks_it(page: Page, story: Story) -> None:
    """On the done item's page: Rewind to draft with a reason (confirmed), then Fork at edit,
    which opens the new item; the log names the operator."""
    item_id = story.items["done"]
    accept_dialogs(page)
    sign_in(page, story.tokens["ops"], f"/items/{item_id}")
    replay = page.locator("#replay")
    replay.get_by_label("rewind to stage").select_option("draft")
    replay.get_by_label("reason").fill("the numbers changed")
    replay.get_by_role("button", name="Rewind").click()
    expect(page.locator(".flash.ok")).to_contain_text("Rewound")
    rewound, ready = events(story, item_id)[-2:]
    assert (rewound["type"], rewound["actor"], rewound["data"]["reason"]) == (
        "ItemRewound",
        "operator:ops",
        "the numbers changed",
    )
    assert (ready["data"]["stage"], ready["data"]["reason"]) == ("draft", "rewound")

    replay = page.locator("#replay")
    replay.get_by_label("fork at stage").select_option("edit")
    replay.get_by_role("button", name="Fork").click()
    expect(page.locator(".flash.ok")).to_contain_text("Forked")
    fork_id = page.url.rsplit("/items/", 1)[1].split("?")[0]
    assert fork_id != item_id
    expect(page.locator("#item-title")).to_have_text("Why agents overspend")
    first = events(story, fork_id)[1]
    assert (first["type"], first["data"]["forked_from"], first["actor"]) == (
        "ItemForked",
        item_id,
        "operator:ops",
    )


def test_an_auditor_sees_no_webhooks_and_no_rewind_or_fork(page: Page, story: Story) -> None:
    """No Webhooks link, a 403 at its address, no replay buttons on an item."""
    sign_in(page, story.tokens["reader"], f"/items/{story.items['parked']}")
    expect(page.locator("#replay")).to_have_count(0)
    expect(page.locator("header.top nav").get_by_role("link", name="Webhooks")).to_have_count(0)
    response = page.goto("/webhooks")
    assert response is not None
    assert response.status == 403
