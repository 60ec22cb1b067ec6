"""A real browser (Debian's chromium, driven by Playwright) against a real `stateowner serve`,
one server per module with the story of tests/browser/story.py told to it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Request, sync_playwright

from tests.browser.story import Story, tell
from tests.live import LiveService, own_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# Module scope: the sync driver holds an event loop in this thread while it is open, which would
# stop later modules' asyncio.run.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's chromium; when it is missing this fails (never skips): .ci/run installs it."""
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def service(
    server_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    with own_service(server_conninfo, Path(tmp_path_factory.mktemp("browser"))) as live:
        yield live


@pytest.fixture(scope="module")
def story(service: LiveService) -> Story:
    return tell(service.base)


@dataclass
class Watch:
    """What a page did that it must not: script errors, requests to another host, dialogs."""

    errors: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)


@pytest.fixture
def context(browser: Browser, service: LiveService) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1440, "height": 1000}, base_url=service.base)
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext, service: LiveService) -> Iterator[Page]:
    """A fresh page whose script errors and off-host requests fail the test."""
    watch = Watch()
    host = urlsplit(service.base).netloc

    def only_here(route: object, request: Request) -> None:
        if urlsplit(request.url).netloc != host:
            watch.elsewhere.append(request.url)
            route.abort()  # type: ignore[attr-defined]
        else:
            route.continue_()  # type: ignore[attr-defined]

    opened = context.new_page()
    opened.route("**/*", only_here)
    opened.on("pageerror", lambda error: watch.errors.append(str(error)))
    yield opened
    assert watch.errors == [], watch.errors
    assert watch.elsewhere == [], watch.elsewhere


def sign_in(page: Page, token: str, path: str = "/") -> None:
    """Open a page, land on the sign-in form, sign in and come back to the page."""
    page.goto(path)
    page.wait_for_url("**/signin**")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("header.top")
