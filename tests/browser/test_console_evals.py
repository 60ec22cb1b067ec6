"""The pipeline page in chromium: its eval runs with each case, the active version, and an
activation the eval gate refuses for an operator and an admin forces."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.browser.story import Story
from tests.browser.test_console import accept_dialogs
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveService

pytestmark = pytest.mark.browser

SPEC = {"stages": [{"name": "write"}], "eval_gate": {"tolerance": 0.0}}
CASES = [{"name": "says ok", "checks": [{"kind": "contains", "value": "ok"}]}]


def run_eval(story: Story, version: int, text: str) -> None:
    started = story.call(
        "ops", "POST", "/v1/pipelines/digest/evals", json={"version": version, "cases": CASES}
    )
    story.complete_with("scribe", story.claim("scribe", "write"), text)
    deadline = time.monotonic() + 20
    while True:
        run = story.call(None, "GET", f"/v1/pipelines/digest/evals/{started['id']}")
        if run["status"] == "finished":
            return
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


class EvalStory(Story):
    def complete_with(self, who: str, lease: str, text: str) -> None:
        self.call(who, "POST", f"/v1/leases/{lease}/complete", json={"output": {"text": text}})


@pytest.fixture(scope="module")
def story(service: LiveService) -> Story:
    """A gated pipeline whose version 1 passes its eval run and version 2 fails it."""
    told = EvalStory(service.base)
    for name, role, stages in (("scribe", "agent", ["write"]), ("ops", "operator", [])):
        body: dict[str, Any] = {"name": name, "role": role, "stages": stages}
        told.tokens[name] = told.call(None, "POST", "/v1/agents", json=body)["token"]
    told.call(None, "PUT", "/v1/pipelines/digest", json=SPEC)
    run_eval(told, 1, "all ok")
    told.call(None, "PUT", "/v1/pipelines/digest", json=SPEC)
    run_eval(told, 2, "nothing good")
    return told


def test_eval_runs_on_the_pipeline_page_and_the_gate_in_the_console(
    page: Page, story: Story
) -> None:
    """An operator sees both runs and is refused version 2; an admin forces it, and the log
    records who."""
    asked = accept_dialogs(page)
    sign_in(page, story.tokens["ops"], "/pipelines/digest")
    runs = page.locator("#eval-runs tr.eval-run")
    expect(runs).to_have_count(2)
    expect(page.locator("#eval-runs td.pass-rate")).to_have_text(["0%", "100%"])
    page.locator("#eval-runs summary").first.click()
    expect(page.locator("#eval-runs tr.eval-case").first).to_contain_text("does not contain")
    expect(page.locator("#active-version")).to_have_text("active: v1")
    expect(page.locator("input[name=force]")).to_have_count(0)  # not an admin's page

    page.locator("form[action='/pipelines/digest/versions/2/activate'] button").click()
    expect(page.locator("body")).to_contain_text("Refused: pass rate 0.000")
    expect(page.locator("#active-version")).to_have_text("active: v1")
    assert asked == ["Make version 2 the one new items start on?"]

    page.context.clear_cookies()
    sign_in(page, ADMIN_TOKEN, "/pipelines/digest")
    form = page.locator("form[action='/pipelines/digest/versions/2/activate']")
    form.locator("input[name=force]").check()
    form.locator("button").click()
    expect(page.locator(".flash")).to_contain_text("Activated.")
    expect(page.locator("#active-version")).to_have_text("active: v2")
    events = story.call(None, "GET", "/v1/events")["events"]
    activated = [e for e in events if e["type"] == "VersionActivated"]
    assert [(e["actor"], e["data"]["how"]) for e in activated][-1] == ("admin:builtin", "forced")
