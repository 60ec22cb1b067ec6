"""Eval runs and the eval gate against a real `stateowner serve`: a reference set runs as eval
items, its results come from the items, and a version's activation must earn its place."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Api
from tests.live import STATEOWNER, LiveService, own_service

pytestmark = pytest.mark.api

GATE = {"tolerance": 0.1, "max_cost_ratio": 2.0}
SPEC = {"stages": [{"name": "draft"}, {"name": "score"}], "eval_gate": GATE}
CASES = [
    {
        "name": "costs",
        "input": {"topic": "llm costs"},
        "stage": "draft",
        "checks": [
            {"kind": "contains", "value": "costs"},
            {"kind": "regex", "value": r"fell \d+%"},
            {"kind": "score", "value": 0.5, "stage": "score"},
            {"kind": "max_cost_usd", "value": 0.1},
        ],
    },
    {
        "name": "shape",
        "input": {"topic": "gpu prices"},
        "checks": [
            {"kind": "json_schema", "value": {"type": "object", "required": ["score"]}},
            {"kind": "max_tokens", "value": 1000},
        ],
    },
]
# What the stand-in agents write, by the version of the item they work on: version 2 is worse.
DRAFTS = {1: "LLM costs fell 30%", 2: "nothing to say", 3: "LLM costs fell 40%"}
SCORES = {1: 0.9, 2: 0.2, 3: 0.95}


@pytest.fixture(scope="module")
def live(server_conninfo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with own_service(server_conninfo, Path(tmp_path_factory.mktemp("evals"))) as service:
        yield service


@pytest.fixture(scope="module")
def api(live: LiveService) -> Iterator[Api]:
    with live.client() as client:
        driver = Api(client)
        driver.add_agent("writer", stages=["draft", "score"])
        driver.add_agent("op", role="operator")
        driver.add_agent("aud", role="auditor")
        yield driver


def work_all(api: Api, count: int, fail_draft: bool = False) -> list[dict[str, Any]]:
    """The stand-in agents: draft then score `count` ready items; return the claims."""
    claims = []
    for stage in ("draft", "score"):
        for _ in range(count):
            claim = api.claim("writer", stage)
            claims.append(claim)
            version = claim["item"]["pipeline_version"]
            lease = claim["lease"]["id"]
            if stage == "draft" and fail_draft:
                response = api.client.post(
                    f"/v1/leases/{lease}/fail",
                    json={"error": "model refused", "retryable": False},
                    headers=api.as_("writer"),
                )
                assert response.status_code == 200, response.text
                continue
            output: Any = (
                {"text": DRAFTS[version]} if stage == "draft" else {"score": SCORES[version]}
            )
            api.complete("writer", lease, output=output, cost_usd=0.01, tokens_in=50, tokens_out=20)
        if fail_draft:
            break
    return claims


def start_eval(api: Api, version: int, cases: list[dict[str, Any]] = CASES) -> dict[str, Any]:
    response = api.client.post(
        "/v1/pipelines/summaries/evals",
        json={"version": version, "cases": cases},
        headers=api.as_("op"),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(api: Api, started: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        response = api.client.get(
            f"/v1/pipelines/summaries/evals/{started['id']}",
            params={"min_position": started["position"]},
            headers=api.as_("aud"),
        )
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] == "finished":
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def activate(api: Api, version: int, as_: str = "op", force: bool = False) -> httpx.Response:
    response: httpx.Response = api.client.post(
        f"/v1/pipelines/summaries/versions/{version}/activate",
        params={"force": "true"} if force else {},
        headers=api.admin if as_ == "admin" else api.as_(as_),
    )
    return response


def new_item_version(api: Api) -> int:
    item = api.create_item(pipeline="summaries", title="production")
    version: int = item["pipeline_version"]
    assert item["eval"] is False
    api.client.post(f"/v1/items/{item['id']}/cancel", headers=api.admin)
    return version


def test_the_eval_gate_keeps_new_items_on_the_active_version(api: Api) -> None:
    """A worse version's activation is refused and new items stay on the active version; a
    better one is accepted; an admin's forcing is recorded with the actor."""
    assert api.put_pipeline("summaries", SPEC)["active_version"] == 1

    baseline = start_eval(api, 1)
    claims = work_all(api, 2)
    assert all(claim["eval"] and claim["item"]["eval"] for claim in claims)
    run = finished(api, baseline)
    assert (run["passed"], run["failed"], run["pass_rate"]) == (2, 0, 1.0)
    assert run["cost_per_item_usd"] == pytest.approx(0.02)
    assert [case["status"] for case in run["cases"]] == ["passed", "passed"]
    assert all(check["passed"] for check in run["cases"][0]["checks"])

    worse = api.put_pipeline("summaries", SPEC)
    assert (worse["version"], worse["active_version"]) == (2, 1)
    assert new_item_version(api) == 1
    started = start_eval(api, 2)
    assert all(claim["item"]["pipeline_version"] == 2 for claim in work_all(api, 2))
    run = finished(api, started)
    assert (run["version"], run["pass_rate"]) == (2, 0.5)

    refused = activate(api, 2)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "eval_gate"
    compared = run["compared_with_active"]
    assert (compared["active_version"], compared["pass_rate"], compared["meets_gate"]) == (
        1,
        1.0,
        False,
    )
    assert "pass rate" in refused.json()["detail"]
    assert new_item_version(api) == 1
    assert (
        api.client.get("/v1/pipelines/summaries", headers=api.admin).json()["active_version"] == 1
    )

    assert api.put_pipeline("summaries", SPEC)["version"] == 3
    started = start_eval(api, 3)
    work_all(api, 2)
    better = finished(api, started)
    assert better["pass_rate"] == 1.0
    accepted = activate(api, 3)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {
        "name": "summaries",
        "active_version": 3,
        "changed": True,
        "forced": False,
        "position": accepted.json()["position"],
    }
    assert new_item_version(api) == 3

    assert activate(api, 2, force=True).status_code == 403  # an operator may not force
    forced = activate(api, 2, as_="admin", force=True)
    assert forced.status_code == 200, forced.text
    assert forced.json()["forced"] is True
    assert new_item_version(api) == 2
    events = api.client.get(
        "/v1/events", params={"after": accepted.json()["position"]}, headers=api.admin
    ).json()["events"]
    recorded = [e for e in events if e["type"] == "VersionActivated"]
    assert [(e["actor"], e["data"]["version"], e["data"]["how"]) for e in recorded] == [
        ("admin:builtin", 2, "forced")
    ]
    assert recorded[0]["data"]["candidate_run"]["pass_rate"] == 0.5


def test_a_worse_run_shows_which_checks_failed(api: Api) -> None:
    """Each case names the checks it failed."""
    runs = api.client.get(
        "/v1/pipelines/summaries/evals", params={"version": 2}, headers=api.as_("writer")
    ).json()["runs"]
    assert runs
    run = api.client.get(f"/v1/pipelines/summaries/evals/{runs[0]['id']}", headers=api.admin).json()
    costs = run["cases"][0]
    assert costs["status"] == "failed"
    failing = {check["kind"] for check in costs["checks"] if not check["passed"]}
    assert failing == {"contains", "regex", "score"}


def test_a_parked_case_fails_and_eval_spend_stays_out_of_production(api: Api) -> None:
    """A case whose item parks fails; eval spend counts in scope `eval`, not `global`."""
    assert (
        api.client.put(
            "/v1/budgets/eval", json={"alert_usd": 10, "halt_usd": 20}, headers=api.admin
        ).status_code
        == 200
    )
    assert (
        api.client.put(
            "/v1/budgets/global", json={"alert_usd": 10, "halt_usd": 20}, headers=api.admin
        ).status_code
        == 200
    )
    started = start_eval(api, 2, CASES[:1])
    work_all(api, 1, fail_draft=True)
    run = finished(api, started)
    assert run["cases"][0]["status"] == "failed"
    assert run["cases"][0]["item_status"] == "parked"
    item = api.item(run["cases"][0]["item_id"])
    assert item["eval"] is True
    api.settle()
    spent = {
        b["scope"]: b["spent_usd"] for b in api.client.get("/v1/budgets", headers=api.admin).json()
    }
    assert spent["eval"] > 0
    assert spent["global"] == 0


def test_the_report_leaves_eval_items_out_and_takes_quality_from_the_active_runs(
    api: Api,
) -> None:
    """The pipeline's report counts only production items, and its quality pass rate is the
    active version's latest finished eval run."""
    api.settle()
    items = api.client.get(
        "/v1/items", params={"pipeline": "summaries", "limit": 200}, headers=api.admin
    ).json()["items"]
    production = [item for item in items if not item["eval"]]
    assert production
    assert len(production) < len(items)
    active = api.client.get("/v1/pipelines/summaries", headers=api.admin).json()["active_version"]
    runs = api.client.get(
        "/v1/pipelines/summaries/evals", params={"version": active}, headers=api.admin
    ).json()["runs"]
    latest = next(run for run in runs if run["status"] == "finished")
    report = api.client.get("/v1/pipelines/summaries/report", headers=api.admin).json()
    assert report["items"] == len(production)
    assert report["cancelled"] == len(production)
    assert report["quality_pass_rate"] == latest["pass_rate"]


def test_bad_eval_input_is_refused_naming_the_field(api: Api) -> None:
    def refused(body: dict[str, Any]) -> dict[str, Any]:
        response = api.client.post(
            "/v1/pipelines/summaries/evals", json=body, headers=api.as_("op")
        )
        assert response.status_code == 422, response.text
        problem: dict[str, Any] = response.json()
        return problem

    def case(check: dict[str, Any]) -> dict[str, Any]:
        return {"version": 1, "cases": [{"name": "c", "checks": [check]}]}

    assert "cases.0.checks.0.kind" in refused(case({"kind": "vibes", "value": 1}))["detail"]
    assert "cases[0].checks[0].value" in refused(case({"kind": "regex", "value": "(x"}))["detail"]
    bad_schema = case({"kind": "json_schema", "value": {"type": "nope"}})
    assert "cases[0].checks[0].value" in refused(bad_schema)["detail"]
    unknown = api.client.post(
        "/v1/pipelines/summaries/evals",
        json={"version": 99, "cases": [{"name": "c"}]},
        headers=api.as_("op"),
    )
    assert unknown.status_code == 404
    assert "no version 99" in unknown.json()["detail"]
    missing = activate(api, 99)
    assert missing.status_code == 404
    assert "version 99" in missing.json()["detail"]
    assert (
        api.client.post(
            "/v1/pipelines/nowhere/versions/1/activate", headers=api.as_("op")
        ).status_code
        == 404
    )


def test_an_open_eval_breaker_holds_back_eval_items_only(api: Api) -> None:
    """With the `eval` scope over its halt limit, claims pass eval items over and still hand
    out production work; raising the limit lets the eval item go."""
    assert (
        api.client.put(
            "/v1/budgets/eval", json={"alert_usd": 0.001, "halt_usd": 0.002}, headers=api.admin
        ).status_code
        == 200
    )
    started = start_eval(api, 2, CASES[:1])
    production = api.create_item(pipeline="summaries", title="production")
    claim = api.claim("writer", "draft")
    assert (claim["item"]["id"], claim["eval"]) == (production["id"], False)
    nothing = api.client.post(
        "/v1/claims", json={"stage": "draft", "wait_seconds": 0.2}, headers=api.as_("writer")
    )
    assert nothing.status_code == 204
    assert (
        api.client.put(
            "/v1/budgets/eval", json={"alert_usd": 10, "halt_usd": 20}, headers=api.admin
        ).status_code
        == 200
    )
    claim = api.claim("writer", "draft")
    assert (claim["item"]["id"], claim["eval"]) == (started["items"][0], True)


def test_a_repeated_start_is_the_same_run_and_another_body_is_refused(api: Api) -> None:
    """Under one Idempotency-Key the same body answers the first run; another body is 409."""
    body = {"version": 1, "cases": CASES[:1]}
    headers = {**api.as_("op"), "Idempotency-Key": "nightly-1"}
    first = api.client.post("/v1/pipelines/summaries/evals", json=body, headers=headers)
    again = api.client.post("/v1/pipelines/summaries/evals", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    other = api.client.post(
        "/v1/pipelines/summaries/evals", json={**body, "version": 2}, headers=headers
    )
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_mismatch"


def test_the_evals_projection_verifies_against_the_log(live: LiveService, api: Api) -> None:
    """A rebuild of every view from the log, eval runs included, matches the live tables."""
    api.settle()
    env = {
        **os.environ,
        "STATEOWNER_DATABASE_URL": live.database_url,
        "STATEOWNER_LOG_LEVEL": "warning",
    }
    checked = subprocess.run(
        [str(STATEOWNER), "projections", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
