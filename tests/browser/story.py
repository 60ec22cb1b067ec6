"""A small team's day, told through the API: what the browser tests and the README's screenshots
look at. Items end done, parked, halted, claimed and waiting; one is titled like a script."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN

ARTICLE_V1: dict[str, Any] = {
    "stages": [
        {"name": "research", "max_attempts": 2, "lease_seconds": 300, "retry_backoff_seconds": 0},
        {"name": "draft", "lease_seconds": 600},
        {"name": "edit", "on": {"revise": "draft"}},
        {"name": "publish"},
    ],
    "max_visits_per_stage": 3,
    "max_transitions": 50,
}
ARTICLE_V2: dict[str, Any] = {
    **ARTICLE_V1,
    "stages": [*ARTICLE_V1["stages"][:3], {"name": "publish", "max_attempts": 5}],
    "item_budget_usd": 2.5,
}
TRIAGE: dict[str, Any] = {"stages": [{"name": "triage"}], "item_budget_usd": 0.05}
SCRIPT_TITLE = "<script>alert('owned')</script> & friends"


@dataclass
class Story:
    base: str
    tokens: dict[str, str] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None = None) -> httpx.Client:
        token = self.tokens[who] if who else ADMIN_TOKEN
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def call(self, who: str | None, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        with self.client(who) as client:
            response = client.request(method, path, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def create(self, who: str, pipeline: str, topic: str, title: str) -> str:
        body = {"pipeline": pipeline, "topic": topic, "title": title, "input": {"brief": title}}
        item_id: str = self.call(who, "POST", "/v1/items", json=body)["id"]
        return item_id

    def claim(self, who: str, stage: str) -> str:
        body = self.call(who, "POST", "/v1/claims", json={"stage": stage, "wait_seconds": 10})
        lease: str = body["lease"]["id"]
        return lease

    def complete(
        self, who: str, lease: str, cost: float = 0.02, outcome: str | None = None
    ) -> None:
        report: dict[str, Any] = {
            "output": {"text": f"{who} was here"},
            "cost_usd": cost,
            "tokens_in": 1200,
            "tokens_out": 340,
            "duration_ms": 2150,
            "trace": {"model": "stand-in-1", "calls": [{"tool": "search", "ms": 410}]},
        }
        if outcome:
            report["outcome"] = outcome
        self.call(who, "POST", f"/v1/leases/{lease}/complete", json=report)

    def fail(self, who: str, lease: str, error: str, retryable: bool) -> None:
        report = {"error": error, "retryable": retryable, "cost_usd": 0.01, "trace": {"step": 3}}
        self.call(who, "POST", f"/v1/leases/{lease}/fail", json=report)

    def wait_for(self, item_id: str, status: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            with self.client() as client:
                found = client.get(f"/v1/items/{item_id}").json().get("status")
            if found == status:
                return
            assert time.monotonic() < deadline, f"{item_id} is {found}, not {status}"
            time.sleep(0.05)

    def settle(self) -> int:
        deadline = time.monotonic() + 20
        while True:
            with self.client() as client:
                statuses = client.get("/v1/projections").json()
            if all(s["lag"] == 0 for s in statuses):
                return int(statuses[0]["head"])
            assert time.monotonic() < deadline, statuses
            time.sleep(0.05)


def tell(base: str) -> Story:
    """Define the team and run its items into every state the console shows."""
    story = Story(base)
    story.call(None, "PUT", "/v1/pipelines/article", json=ARTICLE_V1)
    story.call(None, "PUT", "/v1/pipelines/article", json=ARTICLE_V2)
    story.call(None, "PUT", "/v1/pipelines/triage", json=TRIAGE)
    for name, role, stages in (
        ("researcher", "agent", ["research"]),
        ("writer", "agent", ["draft"]),
        ("editor", "agent", ["edit", "triage"]),
        ("publisher", "agent", ["publish"]),
        ("ops", "operator", []),
        ("reader", "auditor", []),
    ):
        body = {"name": name, "role": role, "stages": stages}
        story.tokens[name] = story.call(None, "POST", "/v1/agents", json=body)["token"]
    story.call(None, "PUT", "/v1/budgets/global", json={"alert_usd": 2, "halt_usd": 5})
    story.call(None, "PUT", "/v1/budgets/topic:llm-costs", json={"alert_usd": 0.05, "halt_usd": 1})
    story.call(None, "PUT", "/v1/budgets/agent:writer", json={"alert_usd": 0.5, "halt_usd": 1})

    done = story.create("researcher", "article", "llm-costs", "Why agents overspend")
    for who, stage in (
        ("researcher", "research"),
        ("writer", "draft"),
        ("editor", "edit"),
        ("publisher", "publish"),
    ):
        story.complete(who, story.claim(who, stage), cost=0.03)
    story.items["done"] = done

    parked = story.create("researcher", "article", "evals", "Benchmarks that lie")
    story.fail("researcher", story.claim("researcher", "research"), "source site 503", True)
    story.wait_for(parked, "ready")
    story.fail("researcher", story.claim("researcher", "research"), "source site 503", True)
    story.wait_for(parked, "parked")
    story.items["parked"] = parked

    halted = story.create("editor", "triage", "support", "Refund request #4411")
    story.complete("editor", story.claim("editor", "triage"), cost=0.12)
    story.wait_for(halted, "halted")
    story.items["halted"] = halted

    script = story.create("researcher", "article", "security", SCRIPT_TITLE)
    story.complete("researcher", story.claim("researcher", "research"), cost=0.015)
    story.wait_for(script, "ready")
    story.claim("writer", "draft")
    story.items["script"] = script

    story.items["waiting"] = story.create("researcher", "article", "llm-costs", "Caching prompts")
    story.settle()
    return story
