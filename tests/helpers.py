"""A thin driver over the HTTP API, so scenario tests read as a story."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN

ARTICLE_SPEC: dict[str, Any] = {
    "stages": [
        {"name": "research", "max_attempts": 3, "lease_seconds": 300, "retry_backoff_seconds": 2},
        {"name": "draft"},
        {"name": "edit", "on": {"revise": "draft"}},
        {"name": "publish"},
    ],
    "max_visits_per_stage": 3,
    "max_transitions": 50,
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    client: httpx.Client | Any
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def admin(self) -> dict[str, str]:
        return bearer(ADMIN_TOKEN)

    def as_(self, name: str) -> dict[str, str]:
        return bearer(self.tokens[name])

    def add_agent(self, name: str, role: str = "agent", stages: list[str] | None = None) -> str:
        response = self.client.post(
            "/v1/agents",
            json={"name": name, "role": role, "stages": stages or []},
            headers=self.admin,
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        self.tokens[name] = token
        return token

    def put_pipeline(
        self, name: str = "article", spec: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = self.client.put(
            f"/v1/pipelines/{name}", json=spec or ARTICLE_SPEC, headers=self.admin
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def create_item(
        self,
        as_: str | None = None,
        pipeline: str = "article",
        topic: str = "llm-costs",
        title: str = "An item",
    ) -> dict[str, Any]:
        headers = self.as_(as_) if as_ else self.admin
        response = self.client.post(
            "/v1/items",
            json={"pipeline": pipeline, "topic": topic, "title": title, "input": {}},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def claim(self, agent: str, stage: str, wait_seconds: float = 5) -> dict[str, Any]:
        response = self.client.post(
            "/v1/claims",
            json={"stage": stage, "wait_seconds": wait_seconds},
            headers=self.as_(agent),
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def complete(self, agent: str, lease_id: str, **report: Any) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/leases/{lease_id}/complete", json=report, headers=self.as_(agent)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def item(self, item_id: str, min_position: int = 0) -> dict[str, Any]:
        response = self.client.get(
            f"/v1/items/{item_id}", params={"min_position": min_position}, headers=self.admin
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def events(self, item_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/items/{item_id}/events", headers=self.admin)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def settle(self) -> int:
        """Wait until every follower has caught up with the log head; return the head."""
        import time

        deadline = time.monotonic() + 15
        while True:
            statuses = self.client.get("/v1/projections", headers=self.admin).json()
            head = statuses[0]["head"]
            if all(s["lag"] == 0 for s in statuses):
                return int(head)
            assert time.monotonic() < deadline, statuses
            time.sleep(0.01)
