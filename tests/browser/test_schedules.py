"""The console's schedules and a pipeline's report in chromium: an auditor finds a schedule an
operator put, and reads the pipeline's waiting vs working times and exit criteria."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.browser.story import Story

pytestmark = pytest.mark.browser


def test_an_auditor_finds_the_schedules_and_the_pipelines_report(page: Page, story: Story) -> None:
    """A schedule put through the API is listed with its timetable; the pipeline's report shows
    its items, each stage's waiting and working time, and its criteria."""
    story.call(
        None,
        "PUT",
        "/v1/schedules/morning-brief",
        json={
            "pipeline": "article",
            "topic": "briefs",
            "title": "Brief {tick}",
            "cron": "0 7 * * 1-5",
            "timezone": "Europe/Paris",
            "enabled": False,
        },
    )
    sign_in(page, story.tokens["reader"])
    page.locator("header.top nav").get_by_role("link", name="Schedules", exact=True).click()
    expect(page.locator("main h1")).to_contain_text("Schedules")
    row = page.locator("tr[data-schedule='morning-brief']")
    expect(row).to_contain_text("0 7 * * 1-5")
    expect(row).to_contain_text("Europe/Paris")
    expect(row).to_contain_text("off")

    row.get_by_role("link", name="article").click()
    expect(page.locator("main h1")).to_contain_text("article")
    # A count, not the template's reach into the dict's own `items` method.
    expect(page.locator("[data-figure='items']")).to_have_text(re.compile(r"^[1-9][0-9]*$"))
    expect(page.locator("#report-stages tr[data-stage='research']")).to_have_count(1)
    expect(page.locator("#report-criteria")).to_contain_text("exit_criteria")

    page.goto("/pipelines/article")
    page.get_by_role("link", name="Report: exit criteria, waiting vs working time").click()
    page.fill("input[name=days]", "30")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("main h1")).to_contain_text("last 30 days")
