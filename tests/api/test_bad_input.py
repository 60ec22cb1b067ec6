"""Bad input gets a clear problem response and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Api

pytestmark = pytest.mark.api

ITEM = {"pipeline": "article", "topic": "t", "title": "x", "input": {}}
NOT_JSON = object()

BAD_REQUESTS: list[tuple[str, str, str, Any, int, str]] = [
    ("malformed JSON", "POST", "/v1/items", NOT_JSON, 422, "validation_error"),
    ("body is a list", "POST", "/v1/items", [1, 2], 422, "validation_error"),
    ("unknown field", "POST", "/v1/items", {**ITEM, "colour": "red"}, 422, "validation_error"),
    (
        "missing title",
        "POST",
        "/v1/items",
        {"pipeline": "article", "topic": "t"},
        422,
        "validation_error",
    ),
    ("wrong type", "POST", "/v1/items", {**ITEM, "title": 5}, 422, "validation_error"),
    (
        "input not an object",
        "POST",
        "/v1/items",
        {**ITEM, "input": "text"},
        422,
        "validation_error",
    ),
    ("unknown pipeline", "POST", "/v1/items", {**ITEM, "pipeline": "nope"}, 404, "not_found"),
    ("empty topic", "POST", "/v1/items", {**ITEM, "topic": ""}, 422, "validation_error"),
    (
        "unknown item",
        "GET",
        "/v1/items/00000000-0000-0000-0000-000000000000",
        None,
        404,
        "not_found",
    ),
    ("malformed item id", "GET", "/v1/items/not-a-uuid", None, 404, "not_found"),
    ("malformed item id events", "GET", "/v1/items/%20/events", None, 404, "not_found"),
    (
        "version not a number",
        "GET",
        "/v1/items/00000000-0000-0000-0000-000000000000/at/x",
        None,
        404,
        "not_found",
    ),
    ("unknown lease", "POST", "/v1/leases/abc/complete", {}, 404, "not_found"),
    ("bad list status", "GET", "/v1/items?status=lost", None, 422, "validation_error"),
    ("bad list limit", "GET", "/v1/items?limit=0", None, 422, "validation_error"),
    ("forged cursor", "GET", "/v1/items?cursor=bm90IGEgY3Vyc29y", None, 422, "validation_error"),
    ("negative min_position", "GET", "/v1/items?min_position=-1", None, 422, "validation_error"),
    (
        "min_position past the log",
        "GET",
        "/v1/items?min_position=999999",
        None,
        409,
        "position_ahead",
    ),
    ("empty pipeline", "PUT", "/v1/pipelines/p", {"stages": []}, 422, "validation_error"),
    ("pipeline not JSON", "PUT", "/v1/pipelines/p", NOT_JSON, 422, "validation_error"),
    (
        "duplicate stages",
        "PUT",
        "/v1/pipelines/p",
        {"stages": [{"name": "a"}, {"name": "a"}]},
        422,
        "validation_error",
    ),
    (
        "unknown target",
        "PUT",
        "/v1/pipelines/p",
        {"stages": [{"name": "a", "on": {"x": "b"}}]},
        422,
        "validation_error",
    ),
    (
        "zero attempts",
        "PUT",
        "/v1/pipelines/p",
        {"stages": [{"name": "a", "max_attempts": 0}]},
        422,
        "validation_error",
    ),
    (
        "bad pipeline name",
        "PUT",
        "/v1/pipelines/a%20b",
        {"stages": [{"name": "a"}]},
        422,
        "validation_error",
    ),
    ("unknown pipeline get", "GET", "/v1/pipelines/nope", None, 404, "not_found"),
    ("bad role", "POST", "/v1/agents", {"name": "x", "role": "god"}, 422, "validation_error"),
    (
        "agent name taken",
        "POST",
        "/v1/agents",
        {"name": "writer", "role": "agent"},
        409,
        "already_exists",
    ),
    ("unknown agent", "POST", "/v1/agents/nobody/disable", None, 404, "not_found"),
    (
        "wait too long",
        "POST",
        "/v1/claims",
        {"stage": "research", "wait_seconds": 31},
        422,
        "validation_error",
    ),
    ("topic tags not a list", "PUT", "/v1/topics/t", {"tags": "a"}, 422, "validation_error"),
    ("events after negative", "GET", "/v1/events?after=-5", None, 422, "validation_error"),
    ("NUL in a title", "POST", "/v1/items", {**ITEM, "title": "a\u0000b"}, 422, "validation_error"),
    (
        "NUL deep in input",
        "POST",
        "/v1/items",
        {**ITEM, "input": {"a": ["\u0000"]}},
        422,
        "validation_error",
    ),
    (
        "NUL in topic metadata",
        "PUT",
        "/v1/topics/t",
        {"metadata": {"k": "\u0000"}},
        422,
        "validation_error",
    ),
    ("NUL in a path", "GET", "/v1/topics/a%00b", None, 422, "validation_error"),
    ("NUL in a query", "GET", "/v1/items?topic=a%00", None, 422, "validation_error"),
    ("unknown route", "GET", "/v1/nothing", None, 404, "not_found"),
    ("wrong method", "DELETE", "/v1/items", None, 405, "method_not_allowed"),
    ("retry a ready item", "POST", "/v1/items/{item}/retry", None, 409, "invalid_state"),
    ("resume a ready item", "POST", "/v1/items/{item}/resume", None, 409, "invalid_state"),
]


@pytest.fixture
def seeded(api: Api) -> tuple[Api, str]:
    api.put_pipeline()
    api.add_agent("writer", stages=["research"])
    item = api.create_item(as_="writer")
    return api, item["id"]


def _state(api: Api) -> tuple[int, Any]:
    head = api.settle()
    items = api.client.get("/v1/items", headers=api.admin).json()
    return head, items


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status", "code"),
    BAD_REQUESTS,
    ids=[row[0] for row in BAD_REQUESTS],
)
def test_bad_request_gets_a_problem_and_changes_nothing(
    seeded: tuple[Api, str], case: str, method: str, path: str, body: Any, status: int, code: str
) -> None:
    """Each bad request is refused with its status and code, and the log does not move."""
    api, item_id = seeded
    before = _state(api)
    caller = api.as_("writer") if path.startswith(("/v1/leases", "/v1/claims")) else api.admin
    kwargs: dict[str, Any] = {"headers": caller}
    if body is NOT_JSON:
        kwargs["content"] = b'{"pipeline": "article", '
        kwargs["headers"] = {**caller, "content-type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    response = api.client.request(method, path.replace("{item}", item_id), **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["type"].endswith(code)
    assert _state(api) == before


def test_an_oversize_body_is_refused_with_413(seeded: tuple[Api, str]) -> None:
    """A body over the limit is refused before it is parsed, and nothing is written."""
    api, _ = seeded
    before = _state(api)
    huge = {
        "pipeline": "article",
        "topic": "t",
        "title": "x",
        "input": {"blob": "x" * (1024 * 1024)},
    }
    response = api.client.post("/v1/items", json=huge, headers=api.admin)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert _state(api) == before


def test_a_chunked_oversize_body_is_refused_with_413(seeded: tuple[Api, str]) -> None:
    """Without a Content-Length the limit still holds, counted as the body streams in."""
    api, _ = seeded

    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 32768

    response = api.client.post(
        "/v1/items", content=chunks(), headers={**api.admin, "content-type": "application/json"}
    )
    assert response.status_code == 413


def test_a_completion_with_a_negative_cost_changes_nothing(seeded: tuple[Api, str]) -> None:
    """A negative cost is refused with 422 and the lease is still held."""
    api, item_id = seeded
    lease = api.claim("writer", "research")["lease"]["id"]
    response = api.client.post(
        f"/v1/leases/{lease}/complete", json={"cost_usd": -1}, headers=api.as_("writer")
    )
    assert response.status_code == 422
    unknown_outcome = api.client.post(
        f"/v1/leases/{lease}/complete", json={"outcome": "sideways"}, headers=api.as_("writer")
    )
    assert unknown_outcome.status_code == 422
    assert "sideways" in unknown_outcome.json()["detail"]
    api.settle()
    assert api.item(item_id)["status"] == "claimed"
