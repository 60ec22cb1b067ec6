"""Every route of the app's own route table, called by every role: each answers exactly the roles
its policy names. A route added without a policy here fails this suite."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import Api

pytestmark = pytest.mark.api

NONE, ADMIN, OPERATOR, AUDITOR, AGENT = "none", "admin", "operator", "auditor", "agent"
ANYONE = {NONE, ADMIN, OPERATOR, AUDITOR, AGENT}
SIGNED_IN = {ADMIN, OPERATOR, AUDITOR, AGENT}
OPERATORS = {ADMIN, OPERATOR}
AUDITORS = {ADMIN, OPERATOR, AUDITOR}

POLICY: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/agents"): {ADMIN},
    ("GET", "/v1/agents"): OPERATORS,
    ("POST", "/v1/agents/{name}/disable"): {ADMIN},
    ("POST", "/v1/agents/{name}/rotate"): {ADMIN},
    ("PUT", "/v1/agents/{name}/stages"): {ADMIN},
    ("PUT", "/v1/agents/{name}/limits"): OPERATORS,
    ("PUT", "/v1/pipelines/{name}"): OPERATORS,
    ("GET", "/v1/pipelines/{name}/report"): SIGNED_IN,
    ("PUT", "/v1/schedules/{name}"): OPERATORS,
    ("GET", "/v1/schedules"): SIGNED_IN,
    ("GET", "/v1/schedules/{name}"): SIGNED_IN,
    ("DELETE", "/v1/schedules/{name}"): OPERATORS,
    ("GET", "/v1/pipelines/{name}"): SIGNED_IN,
    ("POST", "/v1/pipelines/{name}/evals"): OPERATORS,
    ("GET", "/v1/pipelines/{name}/evals"): SIGNED_IN,
    ("GET", "/v1/pipelines/{name}/evals/{run_id}"): SIGNED_IN,
    # Forcing past the eval gate is an admin's alone (403 for an operator, test_evals.py).
    ("POST", "/v1/pipelines/{name}/versions/{version}/activate"): OPERATORS,
    ("POST", "/v1/items"): {ADMIN, OPERATOR, AGENT},
    ("GET", "/v1/items"): SIGNED_IN,
    ("GET", "/v1/items/{item_id}"): SIGNED_IN,
    # Agents pass the role check here; whether they worked on the item is checked after it.
    ("GET", "/v1/items/{item_id}/events"): SIGNED_IN,
    ("GET", "/v1/items/{item_id}/runs"): SIGNED_IN,
    ("GET", "/v1/items/{item_id}/at/{version}"): AUDITORS,
    ("POST", "/v1/items/{item_id}/retry"): OPERATORS,
    ("POST", "/v1/items/{item_id}/cancel"): OPERATORS,
    ("POST", "/v1/items/{item_id}/resume"): OPERATORS,
    ("POST", "/v1/items/{item_id}/rewind"): OPERATORS,
    ("POST", "/v1/items/{item_id}/fork"): OPERATORS,
    ("PUT", "/v1/webhooks/{name}"): OPERATORS,
    ("GET", "/v1/webhooks"): OPERATORS,
    ("GET", "/v1/webhooks/{name}"): OPERATORS,
    ("DELETE", "/v1/webhooks/{name}"): OPERATORS,
    ("GET", "/v1/webhooks/{name}/deliveries"): OPERATORS,
    ("POST", "/v1/webhooks/{name}/deliveries/{delivery_id}/redrive"): OPERATORS,
    ("POST", "/v1/claims"): {AGENT},
    ("POST", "/v1/leases/{lease_id}/heartbeat"): {AGENT},
    ("POST", "/v1/leases/{lease_id}/complete"): {AGENT},
    ("POST", "/v1/leases/{lease_id}/fail"): {AGENT},
    ("PUT", "/v1/topics/{name}"): {ADMIN, OPERATOR, AGENT},
    ("GET", "/v1/topics"): SIGNED_IN,
    ("GET", "/v1/topics/{name}"): SIGNED_IN,
    ("PUT", "/v1/budgets/{scope}"): OPERATORS,
    ("GET", "/v1/budgets"): SIGNED_IN,
    ("POST", "/v1/budgets/{scope}/reset"): OPERATORS,
    ("GET", "/v1/audit"): AUDITORS,
    ("GET", "/v1/events"): AUDITORS,
    ("GET", "/v1/projections"): OPERATORS,
    ("GET", "/v1/health"): OPERATORS,
    ("GET", "/v1/stream"): AUDITORS,
    ("GET", "/healthz"): ANYONE,
    ("GET", "/readyz"): ANYONE,
    ("GET", "/metrics"): ANYONE,
}

# An admitted stream never ends, and the test client waits for the end of a response: the roles a
# stream admits are checked against a real server in test_stream.py, its refusals here.
ENDLESS = {("GET", "/v1/stream")}

PATH_VALUES = {
    "name": "nobody",
    "item_id": "00000000-0000-0000-0000-000000000000",
    "version": "1",
    "lease_id": "0" * 48,
    "scope": "global",
    "delivery_id": "00000000-0000-0000-0000-000000000000",
    "run_id": "00000000-0000-0000-0000-000000000000",
}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    schema: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]
    return sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    )


def test_every_route_has_a_policy(client: TestClient) -> None:
    """The policy table names exactly the routes the app serves."""
    routes = set(_routes(client))
    assert routes - POLICY.keys() == set(), "routes without a policy"
    assert POLICY.keys() - routes == set(), "policies for routes that do not exist"


@pytest.fixture
def callers(api: Api) -> dict[str, dict[str, str]]:
    api.add_agent("op", role="operator")
    api.add_agent("aud", role="auditor")
    api.add_agent("worker", role="agent", stages=["work"])
    return {
        NONE: {},
        ADMIN: api.admin,
        OPERATOR: api.as_("op"),
        AUDITOR: api.as_("aud"),
        AGENT: api.as_("worker"),
    }


def test_each_route_answers_only_the_roles_its_policy_names(
    client: TestClient, callers: dict[str, dict[str, str]]
) -> None:
    """Refused roles get 401 (no token) or 403; admitted ones get past the gate."""
    wrong: list[str] = []
    for method, template in _routes(client):
        path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], template)
        for role, headers in callers.items():
            admitted = role in POLICY[(method, template)]
            if admitted and (method, template) in ENDLESS:
                continue
            status = client.request(method, path, headers=headers).status_code
            refused_as = 401 if role == NONE else 403
            if admitted and status in (401, 403):
                wrong.append(f"{method} {template} as {role}: {status}, expected admitted")
            if not admitted and status != refused_as:
                wrong.append(f"{method} {template} as {role}: {status}, expected {refused_as}")
    assert wrong == []
