"""The pipeline report: volume, outcomes, cost per item, end-to-end and per-stage waiting vs
working times, incidents and the spec's exit criteria, from the report projection."""

from __future__ import annotations

import time

import pytest

from tests.helpers import Api

pytestmark = pytest.mark.api

SPEC = {
    "stages": [{"name": "draft"}, {"name": "publish"}],
    "exit_criteria": {
        "success_rate": 0.9,
        "cost_per_item_usd": 0.05,
        "items_per_day": 1,
        "p95_seconds": 3600,
        "quality_pass_rate": 0.8,
    },
}


def test_a_report_measures_the_pilot_against_its_exit_criteria(api: Api) -> None:
    """One item done, one cancelled: success 0.5 misses its target, cost and time meet theirs."""
    api.put_pipeline("pilot", SPEC)
    api.add_agent("writer", stages=["draft", "publish"])
    done = api.create_item(pipeline="pilot", title="done")
    cancelled = api.create_item(pipeline="pilot", title="cancelled")
    time.sleep(0.2)  # waiting time to measure
    lease = api.claim("writer", "draft")
    assert lease["item"]["id"] == done["id"]
    api.complete("writer", lease["lease"]["id"], output={}, cost_usd=0.02)
    lease = api.claim("writer", "publish")
    api.complete("writer", lease["lease"]["id"], output={}, cost_usd=0.01)
    cancel = api.client.post(f"/v1/items/{cancelled['id']}/cancel", headers=api.admin)
    assert cancel.status_code == 200, cancel.text
    api.settle()

    response = api.client.get("/v1/pipelines/pilot/report", params={"days": 1}, headers=api.admin)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["items"], report["done"], report["cancelled"]) == (2, 1, 1)
    assert report["success_rate"] == 0.5
    assert report["cost_per_item_usd"] == pytest.approx(0.015)
    assert report["end_to_end"]["p50_seconds"] > 0
    draft = report["stages"]["draft"]
    assert draft["wait_p50_seconds"] >= 0.2
    assert draft["work_p50_seconds"] >= 0
    assert report["incidents"] == 0
    criteria = {c["name"]: c for c in report["criteria"]}
    assert criteria["success_rate"]["met"] is False
    assert criteria["cost_per_item_usd"]["met"] is True
    assert criteria["items_per_day"]["met"] is True
    assert criteria["p95_seconds"]["met"] is True
    assert criteria["quality_pass_rate"] == {
        "name": "quality_pass_rate",
        "target": 0.8,
        "actual": None,
        "met": None,
    }


def test_a_report_of_an_unknown_pipeline_is_404(api: Api) -> None:
    """No pipeline by that name: 404; a days count out of range: 422 naming it."""
    assert api.client.get("/v1/pipelines/none/report", headers=api.admin).status_code == 404
    api.put_pipeline("p", {"stages": [{"name": "a"}]})
    response = api.client.get("/v1/pipelines/p/report", params={"days": 0}, headers=api.admin)
    assert response.status_code == 422
    assert "days" in response.text
    empty = api.client.get("/v1/pipelines/p/report", headers=api.admin).json()
    assert (empty["items"], empty["success_rate"], empty["criteria"]) == (0, None, [])


def test_exit_criteria_must_be_known_and_in_range(api: Api) -> None:
    """An unknown criterion, or a rate above 1, is refused naming it."""
    for criteria, named in (({"speed": 1}, "speed"), ({"success_rate": 2}, "success_rate")):
        spec = {"stages": [{"name": "a"}], "exit_criteria": criteria}
        response = api.client.put("/v1/pipelines/p", json=spec, headers=api.admin)
        assert response.status_code == 422
        assert named in response.json()["detail"]
