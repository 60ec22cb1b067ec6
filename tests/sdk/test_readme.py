"""The README's SDK examples, run as written against a real `stateowner serve` (only its address
is the test server's): the Client block sets up and prints the writer's token, the Worker block
works the draft stage until SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stateowner_client import Client
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveService
from tests.sdk.conftest import wait_for

pytestmark = [pytest.mark.sdk, pytest.mark.api]

ROOT = Path(__file__).resolve().parents[2]
README_BASE = "http://127.0.0.1:8000"


def python_blocks() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Agents' SDK", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readme_client_and_worker_examples_work_as_written(
    live: LiveService, admin: Client
) -> None:
    """The Client example creates a ready item and prints a token; the Worker example, given it,
    completes the item's draft stage with the traced tool call, and exits on SIGTERM."""
    client_block, worker_block = (b.replace(README_BASE, live.base) for b in python_blocks())
    env = {**os.environ, "STATEOWNER_ADMIN_TOKEN": ADMIN_TOKEN}
    setup = subprocess.run(
        [sys.executable, "-c", client_block], env=env, capture_output=True, text=True, timeout=60
    )
    assert setup.returncode == 0, setup.stderr
    status, export, assignment = setup.stdout.split()
    assert (status, export) == ("ready", "export")
    token = assignment.removeprefix("TOKEN=")
    # The list reads the projection, which may be a moment behind the create.
    wait_for("the item to be listed", lambda: len(list(admin.list_items(topic="llm-costs"))) == 1)
    (item,) = admin.list_items(topic="llm-costs")
    worker = subprocess.Popen(
        [sys.executable, "-c", worker_block],
        env={**env, "TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for("the draft to be done", lambda: admin.get_item(item.id).stage == "publish")
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    (run,) = admin.item_runs(item.id)
    assert run.result == "completed"
    assert run.trace["tool_calls"][0]["input"] == {"q": "Why agents overspend"}
    assert run.trace["tool_calls"][0]["output"] == {"hits": 3}
    assert (run.cost_usd, run.tokens.in_, run.tokens.out) == (0.02, 900, 300)
