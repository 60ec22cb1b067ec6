"""The README's curl walkthrough, run as written against a real `stateowner serve`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.api

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "dev-admin-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Walkthrough", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "the README has a walkthrough code block"
    return match.group(1)


@pytest.fixture
def served(clean_database: str, tmp_path: Path) -> Iterator[str]:
    """A real uvicorn serving the app on a free port, on the test database."""
    port = _free_port()
    env = {
        **os.environ,
        "STATEOWNER_DATABASE_URL": clean_database,
        "STATEOWNER_ADMIN_TOKEN": ADMIN_TOKEN,
        "STATEOWNER_DATA_DIR": str(tmp_path),
    }
    stateowner = Path(sys.executable).with_name("stateowner")
    process = subprocess.Popen(
        [str(stateowner), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_readme_walkthrough_works_as_written(served: str) -> None:
    """The walkthrough's commands succeed and print a done item whose history ends ItemCompleted."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _walkthrough()],
        env={**os.environ, "BASE": served, "STATEOWNER_ADMIN_TOKEN": ADMIN_TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "done" in lines
    history = [line.split(" ", 2) for line in lines if re.match(r"^\d+ [A-Z]", line)]
    types = [entry[1] for entry in history]
    assert types[0] == "ItemCreated"
    assert types[-1] == "ItemCompleted"
    assert types.count("StageCompleted") == 4
    assert all(entry[2] for entry in history)
    assert "'total': 1" in result.stdout
