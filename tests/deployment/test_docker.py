"""Static checks of the container wiring: docker/Dockerfile and docker/compose.yml.

No Docker engine runs here, so these tests only parse the files and check that they agree
with each other and with the repository; they do not build the image or start anything.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two compose forms it uses."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments) pairs, continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    pairs = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        pairs.append((keyword.upper(), args.strip()))
    return pairs


def _args(kind: str) -> list[str]:
    return [args for keyword, args in _instructions() if keyword == kind]


def _exposed_port() -> int:
    (expose,) = _args("EXPOSE")
    return int(expose.split("/")[0])


def test_database_url_points_at_the_postgres_service() -> None:
    """The service's database URL names the postgres service and its user, password and db."""
    services = _compose()["services"]
    assert "postgres" in services
    pg_env = _env(services["postgres"])
    url = urlsplit(_env(services["stateowner"])["STATEOWNER_DATABASE_URL"])
    assert url.scheme == "postgresql"
    assert url.hostname == "postgres"
    assert url.port == 5432
    assert url.username == pg_env["POSTGRES_USER"]
    assert url.password == pg_env["POSTGRES_PASSWORD"]
    assert url.path == "/" + pg_env["POSTGRES_DB"]


def test_stateowner_waits_for_a_healthy_postgres() -> None:
    """The service waits for postgres to be healthy, and postgres has a pg_isready healthcheck."""
    services = _compose()["services"]
    depends_on = services["stateowner"]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    test = services["postgres"]["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else test
    assert "pg_isready" in command
    pg_env = _env(services["postgres"])
    assert f"-U {pg_env['POSTGRES_USER']}" in command
    assert f"-d {pg_env['POSTGRES_DB']}" in command


def test_build_context_and_dockerfile_resolve_to_the_real_files() -> None:
    """The build context is the repository root and its dockerfile path is docker/Dockerfile."""
    build = _compose()["services"]["stateowner"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert DOCKERFILE.is_file()


def test_dockerfile_runs_serve_as_non_root_on_the_published_port() -> None:
    """A non-root USER precedes CMD, which serves on 0.0.0.0 at the port exposed and published."""
    keywords = [keyword for keyword, _ in _instructions()]
    users = _args("USER")
    assert users, "Dockerfile never switches user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert last_user < keywords.index("CMD")

    (cmd_args,) = _args("CMD")
    cmd = json.loads(cmd_args)
    assert cmd[:2] == ["stateowner", "serve"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    port = _exposed_port()
    assert int(cmd[cmd.index("--port") + 1]) == port

    published = _compose()["services"]["stateowner"]["ports"]
    container_ports = {int(str(p).split(":")[-1].split("/")[0]) for p in published}
    assert port in container_ports

    (healthcheck,) = _args("HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in healthcheck


def test_copied_packages_exist_and_match_the_wheel_packages() -> None:
    """The package directories the Dockerfile copies exist and equal the wheel's packages."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel_packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])

    copied_dirs = set()
    for args in _args("COPY"):
        *sources, dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is not in the repo"
        dirs = [s for s in sources if (ROOT / s).is_dir()]
        if dirs:
            # A COPY with several directory sources would flatten their contents into dest.
            assert len(sources) == 1, f"COPY {args} mixes a directory with other sources"
            assert dest.rstrip("/") == sources[0].rstrip("/")
            copied_dirs.add(sources[0].rstrip("/"))
    assert copied_dirs == wheel_packages


def test_uv_pin_matches_the_run_script() -> None:
    """The uv version pinned in the Dockerfile equals UV_VERSION in the repo-root run script."""
    pins = re.findall(r"\buv==([0-9][^\s\"']*)", DOCKERFILE.read_text())
    assert len(pins) == 1
    run_pin = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "run").read_text(), re.MULTILINE)
    assert run_pin is not None
    assert pins[0] == run_pin.group(1)
