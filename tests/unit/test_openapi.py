"""The OpenAPI document states its bounds as JSON Schema does, so that clients and fuzzers see
them (pydantic writes `ge`/`le` verbatim when a validator stands before the constraint)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api.app import create_app
from api.settings import Settings

pytestmark = pytest.mark.unit

PYDANTIC_ONLY = {"ge", "le", "gt", "lt", "min_length", "max_length", "multiple_of"}


def _keys(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            # Under "properties" the keys are field names, not keywords.
            if not path.endswith("/properties"):
                yield path, key
            yield from _keys(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _keys(value, f"{path}/{index}")


def test_no_schema_uses_a_pydantic_keyword_that_json_schema_does_not_know() -> None:
    """Every bound in the document is a JSON Schema keyword (minimum, maxLength, …)."""
    document = create_app(Settings()).openapi()
    misplaced = [f"{path}/{key}" for path, key in _keys(document) if key in PYDANTIC_ONLY]
    assert misplaced == []


def test_a_reports_counts_are_bounded_in_the_document() -> None:
    """A completion's token and duration counts carry their range."""
    schemas = create_app(Settings()).openapi()["components"]["schemas"]
    tokens = schemas["CompleteRequest"]["properties"]["tokens_in"]
    assert (tokens["minimum"], tokens["maximum"]) == (0, 10**12)
