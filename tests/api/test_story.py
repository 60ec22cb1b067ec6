"""One item travels a four-stage pipeline, each stage done by a different agent."""

from __future__ import annotations

import pytest

from tests.helpers import Api

pytestmark = pytest.mark.api

STAGES = ["research", "draft", "edit", "publish"]


def test_four_agents_carry_an_item_through_four_stages(api: Api) -> None:
    """Four agents with one stage each carry one item from creation to completion."""
    api.put_pipeline()
    for stage in STAGES:
        api.add_agent(f"{stage}-bot", stages=[stage])
    created = api.create_item(as_="research-bot", title="Why agents overspend")
    assert (created["stage"], created["status"], created["version"]) == ("research", "ready", 2)

    previous_outputs: dict[str, object] = {}
    for stage in STAGES:
        claimed = api.claim(f"{stage}-bot", stage)
        assert claimed["item"]["id"] == created["id"]
        assert claimed["lease"]["stage"] == stage
        assert claimed["lease"]["attempt"] == 1
        assert claimed["outputs"] == previous_outputs
        report = api.complete(
            f"{stage}-bot",
            claimed["lease"]["id"],
            output={"text": f"{stage} done"},
            cost_usd=0.25,
            tokens_in=100,
            tokens_out=40,
            duration_ms=1200,
            trace={"tool_calls": [{"tool": "search", "ms": 30}]},
        )
        # The answer says where the item stands: the next stage already ready, or done.
        following = STAGES[STAGES.index(stage) + 1] if stage != STAGES[-1] else stage
        expected = "ready" if stage != STAGES[-1] else "done"
        assert (report["stage"], report["status"]) == (following, expected)
        previous_outputs[stage] = {"text": f"{stage} done"}

    api.settle()
    item = api.item(created["id"])
    assert item["status"] == "done"
    assert item["cost_usd"] == pytest.approx(1.0)
    assert item["tokens"] == {"in": 400, "out": 160}
    assert item["transitions"] == 3

    history = api.events(created["id"])
    types = [event["type"] for event in history]
    assert types == [
        "ItemCreated",
        *["StageReady", "StageClaimed", "StageCompleted"] * 4,
        "ItemCompleted",
    ]
    assert all(event["actor"] for event in history)
    claimers = [e["actor"] for e in history if e["type"] == "StageClaimed"]
    assert claimers == [f"agent:{stage}-bot" for stage in STAGES]
    assert [e["position"] for e in history] == sorted(e["position"] for e in history)


def test_topic_and_agents_tables_follow_the_work(api: Api) -> None:
    """After the story, the topic shows its inventory and spend, and each agent its work."""
    api.put_pipeline()
    for stage in STAGES:
        api.add_agent(f"{stage}-bot", stages=[stage])
    created = api.create_item(as_="research-bot", topic="costs")
    api.create_item(as_="research-bot", topic="costs")
    claimed = api.claim("research-bot", "research")
    assert claimed["item"]["id"] == created["id"], "oldest ready first"
    api.complete("research-bot", claimed["lease"]["id"], cost_usd=0.5)
    api.settle()

    topic = api.client.get("/v1/topics/costs", headers=api.admin).json()
    assert topic["items"]["total"] == 2
    assert topic["items"]["by_stage"] == {"research": 1, "draft": 1}
    assert topic["items"]["by_status"] == {"ready": 2}
    assert topic["cost_usd"] == pytest.approx(0.5)

    agents = {
        a["name"]: a for a in api.client.get("/v1/agents", headers=api.admin).json()["agents"]
    }
    assert agents["research-bot"]["claims"] == 1
    assert agents["research-bot"]["completions"] == 1
    assert agents["research-bot"]["cost_usd"] == pytest.approx(0.5)
    assert agents["draft-bot"]["claims"] == 0
    assert all("token" not in a for a in agents.values())
