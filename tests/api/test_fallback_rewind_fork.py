"""What runs in a parked stage's place, and operators replaying history into action, against a
real `stateowner serve`: a failed draft goes to human review instead of stopping; a done item is
rewound and runs again; a fork reruns the end of a pipeline on its new version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ARTICLE_SPEC, Api
from tests.live import LiveService, own_service

pytestmark = pytest.mark.api

DESK_SPEC = {
    "stages": [
        {"name": "draft", "max_attempts": 1, "on_park": "human-review"},
        {"name": "publish"},
        {"name": "human-review", "on": {"approve": "publish"}},
    ]
}
REPORT = {"cost_usd": 0.01, "tokens_in": 1, "tokens_out": 1, "duration_ms": 5, "trace": {}}


@pytest.fixture(scope="module")
def live(server_conninfo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with own_service(server_conninfo, Path(tmp_path_factory.mktemp("replay"))) as service:
        yield service


@pytest.fixture(scope="module")
def api(live: LiveService) -> Iterator[Api]:
    with httpx.Client(base_url=live.base, timeout=40) as client:
        api = Api(client)
        api.add_agent("ops", role="operator")
        api.add_agent("aud", role="auditor")
        api.add_agent("desk", stages=["draft", "publish", "human-review"])
        api.add_agent("writer", stages=["research", "draft", "edit", "publish", "seo"])
        yield api


def work(api: Api, agent: str, stage: str, outcome: str | None = None) -> dict[str, Any]:
    """Claim the stage and complete it; returns the claim (item, lease, input, outputs)."""
    claim = api.claim(agent, stage)
    report = {**REPORT, "output": {"by": stage}, **({"outcome": outcome} if outcome else {})}
    api.complete(agent, claim["lease"]["id"], **report)
    return claim


def types(api: Api, item_id: str) -> list[str]:
    return [event["type"] for event in api.events(item_id)]


def test_a_draft_that_fails_for_good_goes_to_human_review_instead_of_stopping(api: Api) -> None:
    """The draft fails and may not be retried: the park is recorded, human review is ready in
    its place, approves, and the item is published; a draft that works skips the review."""
    api.put_pipeline("desk", DESK_SPEC)
    item = api.create_item(pipeline="desk")
    claim = api.claim("desk", "draft")
    failed = api.client.post(
        f"/v1/leases/{claim['lease']['id']}/fail",
        json={"error": "the source is gone", "retryable": False},
        headers=api.as_("desk"),
    )
    assert failed.status_code == 200, failed.text
    assert (failed.json()["stage"], failed.json()["status"]) == ("human-review", "ready")
    events = api.events(item["id"])
    parked, fallback = events[-2], events[-1]
    assert (parked["type"], parked["data"]["stage"], parked["data"]["reason"]) == (
        "ItemParked",
        "draft",
        "failed",
    )
    assert (fallback["type"], fallback["data"]["stage"], fallback["data"]["reason"]) == (
        "StageReady",
        "human-review",
        "fallback",
    )
    work(api, "desk", "human-review", outcome="approve")
    work(api, "desk", "publish")
    assert api.item(item["id"], api.settle())["status"] == "done"

    smooth = api.create_item(pipeline="desk")
    work(api, "desk", "draft")
    work(api, "desk", "publish")
    assert api.item(smooth["id"], api.settle())["status"] == "done"
    assert "human-review" not in api.item(smooth["id"])["visits"]


def _done_article(api: Api) -> str:
    api.put_pipeline("article", ARTICLE_SPEC)
    item = api.create_item(pipeline="article")
    for stage in ("research", "draft", "edit", "publish"):
        work(api, "writer", stage)
    assert api.item(item["id"], api.settle())["status"] == "done"
    item_id: str = item["id"]
    return item_id


def test_an_operator_rewinds_a_done_item_and_it_runs_again(api: Api) -> None:
    """Rewound to draft with a reason, the done item is ready at draft on its second visit,
    runs to done again, and its history says who rewound it and why."""
    item_id = _done_article(api)
    rewound = api.client.post(
        f"/v1/items/{item_id}/rewind",
        json={"stage": "draft", "reason": "the facts changed"},
        headers=api.as_("ops"),
    )
    assert rewound.status_code == 200, rewound.text
    answer = rewound.json()["item"]
    assert (answer["status"], answer["stage"], answer["visit"]) == ("ready", "draft", 2)
    last_two = api.events(item_id)[-2:]
    assert [e["type"] for e in last_two] == ["ItemRewound", "StageReady"]
    assert last_two[0]["actor"] == "operator:ops"
    assert last_two[0]["data"] == {
        "stage": "draft",
        "reason": "the facts changed",
        "from_stage": "publish",
        "from_status": "done",
    }
    assert last_two[1]["data"]["reason"] == "rewound"
    for stage in ("draft", "edit", "publish"):
        work(api, "writer", stage)
    assert api.item(item_id, api.settle())["status"] == "done"
    assert types(api, item_id).count("ItemCompleted") == 2


def test_rewinds_that_cannot_be_are_refused_and_change_nothing(api: Api) -> None:
    """A stage the pipeline lacks is 422 naming body.stage; an unknown item 404; a stage never
    reached, or one the loop guard would refuse, 409; an auditor 403."""
    item_id = _done_article(api)
    before = len(api.events(item_id))

    def rewind(stage: str, headers: dict[str, str] | None = None) -> httpx.Response:
        response: httpx.Response = api.client.post(
            f"/v1/items/{item_id}/rewind",
            json={"stage": stage, "reason": "why not"},
            headers=headers or api.as_("ops"),
        )
        return response

    unknown = rewind("seo")
    assert (unknown.status_code, unknown.json()["code"]) == (422, "validation_error")
    assert [e["location"] for e in unknown.json()["errors"]] == ["body.stage"]
    assert rewind("draft", api.as_("aud")).status_code == 403
    missing = api.client.post(
        "/v1/items/00000000-0000-4000-8000-000000000000/rewind",
        json={"stage": "draft", "reason": "x"},
        headers=api.as_("ops"),
    )
    assert missing.status_code == 404
    assert len(api.events(item_id)) == before
    assert rewind("edit").status_code == 200
    assert rewind("edit").status_code == 200
    guarded = rewind("edit")  # a fourth visit: max_visits_per_stage is 3
    assert (guarded.status_code, guarded.json()["code"]) == (409, "invalid_state")
    assert "loop guard" in guarded.json()["detail"]
    cancelled = api.client.post(f"/v1/items/{item_id}/cancel", headers=api.as_("ops"))
    assert cancelled.status_code == 200
    assert rewind("draft").status_code == 409  # a cancelled item stays cancelled


def test_a_fork_reruns_the_end_of_a_pipeline_on_its_new_version(api: Api) -> None:
    """Forked at edit onto version 2 (which adds seo), the new item is ready at edit, names its
    source, and its claim carries research's and draft's outputs; a repeat with the same key
    is the same fork."""
    item_id = _done_article(api)
    v2 = {
        **ARTICLE_SPEC,
        "stages": [*ARTICLE_SPEC["stages"][:3], {"name": "seo"}, {"name": "publish"}],
    }
    version = api.put_pipeline("article", v2)["version"]
    headers = {**api.as_("ops"), "Idempotency-Key": f"fork-{item_id}"}
    body = {"stage": "edit", "pipeline_version": version}
    forked = api.client.post(f"/v1/items/{item_id}/fork", json=body, headers=headers)
    assert forked.status_code == 201, forked.text
    fork = forked.json()
    assert (fork["forked_from"], fork["stage"], fork["status"]) == (item_id, "edit", "ready")
    assert fork["pipeline_version"] == version
    assert forked.headers["Location"] == f"/v1/items/{fork['id']}"
    again = api.client.post(f"/v1/items/{item_id}/fork", json=body, headers=headers)
    assert (again.status_code, again.json()["id"]) == (201, fork["id"])
    other = api.client.post(f"/v1/items/{item_id}/fork", json={"stage": "draft"}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_mismatch")

    claim = work(api, "writer", "edit")
    assert claim["item"]["id"] == fork["id"]
    assert claim["outputs"] == {"research": {"by": "research"}, "draft": {"by": "draft"}}
    work(api, "writer", "seo")
    work(api, "writer", "publish")
    assert api.item(fork["id"], api.settle())["status"] == "done"
    assert types(api, fork["id"])[:3] == ["ItemCreated", "ItemForked", "StageReady"]


def test_forks_that_cannot_be_are_refused(api: Api) -> None:
    """A stage the version lacks is 422 naming body.stage; a version that does not exist is
    404; an agent may not fork."""
    item_id = _done_article(api)

    def fork(body: dict[str, Any], agent: str = "ops") -> httpx.Response:
        response: httpx.Response = api.client.post(
            f"/v1/items/{item_id}/fork", json=body, headers=api.as_(agent)
        )
        return response

    unknown = fork({"stage": "nowhere"})
    assert unknown.status_code == 422
    assert [e["location"] for e in unknown.json()["errors"]] == ["body.stage"]
    late = fork({"stage": "draft", "pipeline_version": 999})
    assert (late.status_code, late.json()["code"]) == (404, "not_found")
    assert "pipeline_version" in late.json()["detail"]
    assert fork({"stage": "draft"}, agent="writer").status_code == 403
