"""Schemathesis generates requests from the app's own OpenAPI schema, well formed and not, and
sends them as the built-in admin to a real `stateowner serve`; every answer must pass its default
checks: no 5xx, every status, content type, header and body as the schema documents them,
well-formed requests accepted and malformed ones refused."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.live import ADMIN_TOKEN, LiveService, own_service

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def fuzz_target(
    server_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    with own_service(server_conninfo, Path(tmp_path_factory.mktemp("fuzz"))) as service:
        with service.client() as admin:
            admin.put("/v1/pipelines/p", json={"stages": [{"name": "a"}, {"name": "b"}]})
            admin.post("/v1/items", json={"pipeline": "p", "topic": "t", "title": "x"})
        yield service


@pytest.fixture(scope="module")
def api_schema(fuzz_target: LiveService) -> Any:
    loaded = schemathesis.openapi.from_url(f"{fuzz_target.base}/openapi.json")
    # Any code point, lone surrogates included (the default draws only UTF-8-encodable text).
    loaded.config.generation.update(codec=None, allow_x00=True)
    loaded.hook("filter_body")(lambda context, body: _coherent(context.operation.path, body))
    return loaded


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _coherent(path: str, body: Any) -> bool:
    """Rules between fields that JSON Schema cannot state, and the service checks (422 naming
    them): a budget alerts below where it halts; a spec's stage names are unique and its routes
    lead to its stages. The fuzzing phase draws again a body that breaks them; any other body,
    malformed ones included, goes out as generated."""
    if path == "/v1/budgets/{scope}" and isinstance(body, dict):
        alert, halt = _number(body.get("alert_usd")), _number(body.get("halt_usd"))
        return alert is None or halt is None or 0 <= alert < halt
    if path == "/v1/pipelines/{name}" and isinstance(body, dict):
        stages = body.get("stages")
        if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
            return True
        names = [stage.get("name") for stage in stages]
        routes = [
            target
            for stage in stages
            if isinstance(stage.get("on"), dict)
            for target in stage["on"].values()
        ]
        routes += [stage["on_park"] for stage in stages if stage.get("on_park") is not None]
        if any(stage.get("on_park") in (stage.get("name"), "") for stage in stages):
            return False
        # Python's whitespace (which a stage name may not start or end with) has more in it than
        # the schema pattern's \S can say: \x1c-\x1f, \x85.
        trimmed = all(not isinstance(n, str) or n == n.strip() for n in names)
        unique = len(set(map(str, names))) == len(names)
        return trimmed and unique and all(t in names for t in routes)
    if path == "/v1/pipelines/{name}/evals" and isinstance(body, dict):
        return _coherent_cases(body.get("cases"))
    return True


def _timetable_readable(body: dict[str, Any]) -> bool:
    """A schedule has one of cron and every_seconds, a cron the library reads and a zone that
    exists: rules the service checks and names (422)."""
    from bus.timetable import Timetable
    from domain.errors import InvalidField
    from domain.schedule import ScheduleSpec, check_spec

    if not isinstance(body.get("cron"), str | None) or not isinstance(
        body.get("timezone", "UTC"), str
    ):
        return True  # malformed: refused by its schema
    try:
        spec = ScheduleSpec(
            pipeline="p",
            topic="t",
            title="x",
            cron=body.get("cron"),
            every_seconds=body.get("every_seconds"),
            timezone=body.get("timezone", "UTC"),
        )
        Timetable.of(check_spec(spec))
    except (InvalidField, TypeError, ValueError):
        return False
    return True


def _coherent_cases(cases: Any) -> bool:
    """An eval run's case names are unique and each check's value suits its kind (a pattern
    that compiles, a valid schema, a count); a stage named must be one the version has, which
    depends on the service's state, so a generated body names none."""
    if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
        return True
    names = [case.get("name") for case in cases]
    checks = [c for case in cases if isinstance(case.get("checks"), list) for c in case["checks"]]
    return (
        len(set(map(str, names))) == len(names)
        and all(case.get("stage") is None for case in cases)
        and all(_coherent_check(check) for check in checks)
    )


def _coherent_check(check: Any) -> bool:
    if not isinstance(check, dict):
        return True
    kind, value = check.get("kind"), check.get("value")
    if check.get("stage") is not None:
        return False
    if kind == "contains":
        return isinstance(value, str) and value != ""
    if kind == "regex":
        try:
            return isinstance(value, str) and 0 < len(value) <= 1000 and bool(re.compile(value))
        except re.error:
            return False
    if kind == "json_schema":
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError:
            return False
        return isinstance(value, dict | bool)
    if kind in ("max_cost_usd", "max_tokens", "score"):
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if number is None or not math.isfinite(number) or number < 0:
            return False
        return kind != "max_tokens" or float(number).is_integer()
    return True


def _storable(value: Any) -> bool:
    """Whether the log can hold the value: no NUL and no lone surrogate in any string or key
    (the door refuses those with 422 wherever they are; test_bad_input.py tests it)."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_storable(v) for v in value)
    return True


def _unstatable_rule_broken(case: Any) -> bool:
    """A generated request the schema calls well formed that breaks a rule it cannot state:
    the coverage phase's boundary values skip the body filter, and free-form JSON may carry
    what the log cannot hold. Such a request must still be refused as documented."""
    parts = (case.body, case.query, case.path_parameters, case.headers)
    # A schedule's cron and zone are drawn as any text: filtering for readable ones would starve
    # the generator, so those are sent as drawn and only their acceptance is not asked for.
    unreadable = (
        case.operation.path == "/v1/schedules/{name}"
        and isinstance(case.body, dict)
        and not _timetable_readable(case.body)
    )
    return (
        unreadable
        or not _coherent(case.operation.path, case.body)
        or not all(_storable(part) for part in parts if part is not None)
    )


# An admitted /v1/stream never ends, so a generated call would wait forever: test_stream.py tests
# the stream, bad input included.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/v1/stream")


@schema.parametrize()
# One test item runs every route's examples: its time grows with the routes (about 160 s for 37 on
# a loaded 2-core machine), past the suite's 120 s default meant for one scenario.
@pytest.mark.timeout(600)
# derandomize: CI replays the same examples; run with other seeds by hand to explore further.
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_the_one_the_openapi_documents(case: Any, fuzz_target: LiveService) -> None:
    """Whatever the generated request, the answer passes schemathesis's default checks: not a
    5xx, a documented status, content type, headers and body, a well-formed request accepted,
    a malformed one refused."""
    # Only the acceptance of such a request is not asked for; every other check still is.
    excluded = [positive_data_acceptance] if _unstatable_rule_broken(case) else []
    response = case.call_and_validate(
        base_url=fuzz_target.base,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
        excluded_checks=excluded,
    )
    if response.status_code >= 400:
        content_type = response.headers["content-type"]
        assert content_type == ["application/problem+json"], response.text[:300]


# Any JSON a careless client could send: lone surrogates, NUL, NaN, infinities, deep nesting.
careless_text = st.text(st.characters(codec=None), max_size=8)
careless_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | careless_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(careless_text, children, max_size=4)
    ),
    max_leaves=20,
)


@given(value=careless_json, nesting=st.integers(0, 120))
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_careless_json_is_stored_or_refused_never_a_server_error(
    fuzz_target: LiveService, value: Any, nesting: int
) -> None:
    """Whatever JSON lands in an item's input — surrogates, NaN, infinities, nesting past the
    limit — it is created (201) or refused (422); never a 5xx."""
    for _ in range(nesting):
        value = [value]
    body = {"pipeline": "p", "topic": "t", "title": "x", "input": {"v": value}}
    content = json.dumps(body, ensure_ascii=True, allow_nan=True).encode()
    with fuzz_target.client() as admin:
        response = admin.post(
            "/v1/items", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code in (201, 422), (response.status_code, response.text[:300])
