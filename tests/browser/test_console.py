"""The console in chromium: each role signs in, walks the pages and presses the buttons; the log
says what happened."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Dialog, Page, expect

from tests.browser.conftest import sign_in
from tests.browser.story import SCRIPT_TITLE, Story
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveService

pytestmark = pytest.mark.browser

PAGES = {
    "Overview": "Overview",
    "Items": "Items",
    "Budgets": "Budgets",
    "Agents": "Agents",
    "Pipelines": "Pipelines",
    "Schedules": "Schedules",
    "Audit": "Audit",
    "Projections": "Projections",
}
OPERATOR_ONLY = {"Agents", "Projections"}


def accept_dialogs(page: Page) -> list[str]:
    """Answer every confirmation with OK; returns what they asked."""
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return asked


def last_event(story: Story, item_id: str) -> dict[str, Any]:
    with story.client() as admin:
        events: list[dict[str, Any]] = admin.get(f"/v1/items/{item_id}/events").json()["events"]
    return events[-1]


def audit(story: Story, **filters: str) -> list[dict[str, Any]]:
    with story.client() as admin:
        entries: list[dict[str, Any]] = admin.get("/v1/audit", params=filters).json()["entries"]
    return entries


def test_signing_in_shows_the_overview_with_a_strict_httponly_cookie(
    page: Page, context: BrowserContext, story: Story
) -> None:
    """The browser is sent to sign in, signs in with a token, lands on the overview, and holds
    only an HttpOnly, SameSite=Strict session cookie that is not the token."""
    sign_in(page, ADMIN_TOKEN)
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("#stuck-parked")).to_be_visible()
    cookies = {cookie["name"]: cookie for cookie in context.cookies()}
    session = cookies["so_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in session["value"]
    assert ADMIN_TOKEN not in page.content()
    assert page.evaluate("document.cookie") == ""


def test_an_operator_retries_a_parked_item_from_the_overview_in_two_clicks(
    page: Page, story: Story
) -> None:
    """From the overview's stuck work: the parked item's title, then Retry (confirmed); the log
    records the retry by the operator."""
    asked = accept_dialogs(page)
    sign_in(page, story.tokens["ops"])
    page.locator("table[data-stuck=parked]").get_by_role("link", name="Benchmarks that lie").click()
    page.wait_for_url(f"**/items/{story.items['parked']}")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash.ok")).to_contain_text("Retried")
    assert asked
    assert "Retry this item?" in asked[0]
    event = last_event(story, story.items["parked"])
    assert (event["type"], event["actor"], event["data"]["reason"]) == (
        "StageReady",
        "operator:ops",
        "manual",
    )


def test_an_auditor_reads_the_parked_items_timeline_and_sees_no_buttons(
    page: Page, story: Story
) -> None:
    """The auditor finds the item by its topic, reads every event with its actor and cause,
    opens a run's trace, and is offered no command."""
    sign_in(page, story.tokens["reader"])
    page.goto("/items?topic=evals")
    page.get_by_role("link", name="Benchmarks that lie").click()
    rows = page.locator("table.timeline tbody tr")
    expect(rows.filter(has_text="ItemParked")).to_have_count(1)
    assert rows.count() >= 8
    expect(rows.filter(has_text="ItemParked")).to_contain_text("system:bus")
    expect(rows.filter(has_text="ItemParked")).to_contain_text("retries_exhausted")
    trace = page.locator("details.trace").first
    trace.locator("summary").click()
    expect(trace.locator("pre")).to_contain_text('"step": 3')
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    expect(page.locator("#actions")).to_have_count(0)


@pytest.mark.parametrize("who", ["admin", "ops", "reader"])
def test_each_role_walks_every_page_it_may_see(page: Page, story: Story, who: str) -> None:
    """Every page in the navigation opens for the role (with its heading, no script error);
    an auditor has no link to operators' pages and is refused there."""
    sign_in(page, ADMIN_TOKEN if who == "admin" else story.tokens[who])
    nav = page.locator("header.top nav")
    for label, heading in PAGES.items():
        link = nav.get_by_role("link", name=label, exact=True)
        if who == "reader" and label in OPERATOR_ONLY:
            expect(link).to_have_count(0)
            response = page.goto(f"/{label.lower()}")
            assert response is not None
            assert response.status == 403
            page.goto("/")
            continue
        link.click()
        expect(page.locator("main h1")).to_contain_text(heading)
        expect(nav.locator("a.active")).to_have_text(label)
    page.goto(f"/items/{story.items['done']}")
    expect(page.locator("#item-title")).to_have_text("Why agents overspend")


def test_the_version_slider_shows_the_item_as_it_stood(page: Page, story: Story) -> None:
    """Moving the slider back shows the item at that version: ready at research at version 2,
    done at the last."""
    sign_in(page, ADMIN_TOKEN, f"/items/{story.items['done']}")
    at = page.locator("#at-version .at")
    expect(at).to_contain_text("done")
    slider = page.locator("#version")
    last = int(slider.get_attribute("max") or 0)
    assert last > 2
    slider.fill("2")
    expect(page.locator("#at-version .at")).to_have_attribute("data-version", "2")
    expect(page.locator("#at-version .at")).to_contain_text("ready at research")
    expect(page.locator("#version-shown")).to_have_text("2")
    slider.fill(str(last))
    expect(page.locator("#at-version .at")).to_have_attribute("data-version", str(last))


def test_a_new_event_appears_on_an_open_item_page_without_a_reload(
    page: Page, story: Story
) -> None:
    """With an item's page open, an event appended through the API shows in its timeline and
    status by itself."""
    item_id = story.create("researcher", "article", "live", "Watched while it changes")
    sign_in(page, ADMIN_TOKEN, f"/items/{item_id}")
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    story.call(None, "POST", f"/v1/items/{item_id}/cancel")
    expect(page.locator("tr[data-type=ItemCancelled]")).to_have_count(1)
    expect(page.locator("#item-head .status")).to_have_text("cancelled")
    assert navigations == []


def test_an_operator_edits_a_budget_and_resets_its_breaker(page: Page, story: Story) -> None:
    """Lowering a halt level below today's spend opens the breaker; Reset closes it for the day;
    both are in the log under the operator's name."""
    accept_dialogs(page)
    sign_in(page, story.tokens["ops"], "/budgets")
    row = page.locator("tr[data-scope='topic:llm-costs']")
    row.locator("input[name=alert_usd]").fill("0.01")
    row.locator("input[name=halt_usd]").fill("0.02")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_contain_text("Budget saved")
    row = page.locator("tr[data-scope='topic:llm-costs']")
    expect(row.locator(".state")).to_have_text("halted")
    row.get_by_role("button", name="Reset breaker").click()
    expect(page.locator(".flash.ok")).to_contain_text("Breaker reset")
    # Closed for the rest of the day; spend is still over the alert level.
    expect(page.locator("tr[data-scope='topic:llm-costs'] .state")).to_have_text("alerting")
    expect(page.locator("tr[data-scope='topic:llm-costs']")).to_contain_text("reset today")
    by_ops = [e["type"] for e in audit(story, actor="operator:ops")]
    assert "BudgetChanged" in by_ops
    assert "BreakerReset" in by_ops


def test_a_new_budget_with_bad_amounts_is_a_message(page: Page, story: Story) -> None:
    """Amounts that do not parse are named on the page and nothing is saved."""
    sign_in(page, story.tokens["ops"], "/budgets")
    page.fill("input[name=scope][required]", "stage:draft")
    page.locator("section.card form.filters input[name=alert_usd]").fill("a lot")
    page.locator("section.card form.filters input[name=halt_usd]").fill("2")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator(".flash.error")).to_contain_text("alert must be an amount in dollars")
    expect(page.locator("tr[data-scope='stage:draft']")).to_have_count(0)


def test_an_admin_rotates_a_token_and_sees_it_once(
    page: Page, story: Story, service: LiveService
) -> None:
    """Rotate shows the new token on that answer only; the old token is refused, the new works."""
    accept_dialogs(page)
    sign_in(page, ADMIN_TOKEN, "/agents")
    page.locator("tr[data-agent=publisher]").get_by_role("button", name="Rotate token").click()
    token = page.locator("#new-token-value").input_value()
    assert token.startswith("so_")
    page.goto("/agents")
    assert token not in page.content()
    old = httpx.get(
        f"{service.base}/v1/items", headers={"Authorization": f"Bearer {story.tokens['publisher']}"}
    )
    new = httpx.get(f"{service.base}/v1/items", headers={"Authorization": f"Bearer {token}"})
    assert (old.status_code, new.status_code) == (401, 200)
    story.tokens["publisher"] = token


def test_an_admin_disables_an_agent_and_an_operator_cannot(page: Page, story: Story) -> None:
    """An operator sees agents without the admin buttons; an admin disables one, and the log
    says who."""
    story.call(None, "POST", "/v1/agents", json={"name": "temp", "role": "agent", "stages": []})
    sign_in(page, story.tokens["ops"], "/agents")
    expect(page.locator("tr[data-agent=temp]")).to_be_visible()
    expect(page.get_by_role("button", name="Disable")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    accept_dialogs(page)
    sign_in(page, ADMIN_TOKEN, "/agents")
    page.locator("tr[data-agent=temp]").get_by_role("button", name="Disable").click()
    expect(page.locator("tr[data-agent=temp]")).to_contain_text("disabled")
    assert [e["actor"] for e in audit(story, type="AgentDisabled")] == ["admin:builtin"]


def test_a_pipelines_versions_and_their_diff(page: Page, story: Story) -> None:
    """The pipeline page lists its versions and shows what version 2 changed."""
    sign_in(page, story.tokens["reader"], "/pipelines")
    page.get_by_role("link", name="article", exact=True).click()
    expect(page.locator("pre.diff .add")).to_contain_text(['"item_budget_usd": 2.5'])
    expect(page.locator("pre.diff .del").first).to_contain_text('"item_budget_usd": null')


def test_audit_filters_by_actor_and_pages(page: Page, story: Story) -> None:
    """Filtering the audit by actor leaves only that actor's entries."""
    sign_in(page, story.tokens["reader"], "/audit")
    page.fill("input[name=actor]", "system:bus")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/audit?actor=system%3Abus**")
    cells = page.locator("#audit-table tbody tr td:nth-child(3)")
    expect(cells.first).to_have_text("system:bus")
    actors = cells.all_inner_texts()
    assert actors
    assert set(actors) == {"system:bus"}


def test_a_title_like_a_script_is_shown_as_text(page: Page, story: Story) -> None:
    """The item titled <script>… shows its title as text, and runs nothing."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, ADMIN_TOKEN, "/items?topic=security")
    link = page.locator("#items-table tbody a").first
    expect(link).to_have_text(SCRIPT_TITLE)
    link.click()
    expect(page.locator("#item-title")).to_have_text(SCRIPT_TITLE)
    assert dialogs == []


def test_a_tampered_cookie_and_sign_out_lead_back_to_sign_in(
    page: Page, context: BrowserContext, story: Story
) -> None:
    """A changed session cookie is no session; signing out ends the real one."""
    sign_in(page, story.tokens["reader"])
    session = next(c for c in context.cookies() if c["name"] == "so_session")
    context.add_cookies([{**session, "value": "x" + session["value"][1:]}])  # type: ignore[list-item]
    page.goto("/items")
    page.wait_for_url(re.compile(r".*/signin\?next=%2Fitems$"))
    sign_in(page, story.tokens["reader"])
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    page.goto("/")
    page.wait_for_url("**/signin")


def test_unknown_pages_answer_an_html_404(page: Page, story: Story) -> None:
    """A page that does not exist is a page saying so, with a way back."""
    sign_in(page, ADMIN_TOKEN)
    response = page.goto("/no/such/page")
    assert response is not None
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.get_by_role("link", name="Back to the overview")).to_be_visible()


def test_docs_render_offline(page: Page, story: Story) -> None:
    """/docs renders Swagger UI from the package: the page's request guard refuses every other
    host, and the API's title shows."""
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("stateowner")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
