"""Unit tests of the pure auth helpers in api/auth.py: tokens, principals, roles and scopes.

Only new_token, agent_id_of and Principal are exercised; nothing here touches a store.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.auth import BUILTIN_ADMIN, TOKEN_PREFIX, Principal, agent_id_of, new_token
from domain.agent import Role

pytestmark = pytest.mark.unit

AGENT_ID = uuid.UUID("12345678-1234-4234-8234-123456789abc")


# -- tokens ----------------------------------------------------------------------------------------


@given(st.uuids())
def test_agent_id_of_a_new_token_is_its_agent(agent_id: uuid.UUID) -> None:
    """A token made for an agent names that agent."""
    assert agent_id_of(new_token(agent_id)) == agent_id


def test_new_tokens_are_prefixed_and_unguessable() -> None:
    """Tokens start with the prefix and the agent's hex, and two tokens for one agent differ."""
    first, second = new_token(AGENT_ID), new_token(AGENT_ID)
    assert first.startswith(f"{TOKEN_PREFIX}_{AGENT_ID.hex}_")
    assert first != second
    assert len(first) > len(f"{TOKEN_PREFIX}_{AGENT_ID.hex}_") + 40


@pytest.mark.parametrize(
    "token",
    [
        "",
        "so",
        "so_",
        "so__",
        f"so_{AGENT_ID.hex}",
        f"so_{AGENT_ID.hex}_",
        f"xx_{AGENT_ID.hex}_secret",
        f"SO_{AGENT_ID.hex}_secret",
        "so_not-a-uuid_secret",
        f"so_{AGENT_ID.hex[:-1]}_secret",
        f"so_{AGENT_ID.hex}0_secret",
        "Bearer something",
        "test-admin-token",
    ],
)
def test_agent_id_of_garbage_is_none(token: str) -> None:
    """Anything not shaped like prefix_agenthex_secret names no agent."""
    assert agent_id_of(token) is None


@given(st.text(max_size=80))
def test_agent_id_of_never_raises(token: str) -> None:
    """Arbitrary text yields an agent id or None, never an exception."""
    result = agent_id_of(token)
    assert result is None or isinstance(result, uuid.UUID)


# -- principals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "granted"),
    [
        (Role.ADMIN, {Role.ADMIN, Role.OPERATOR, Role.AUDITOR}),
        (Role.OPERATOR, {Role.OPERATOR, Role.AUDITOR}),
        (Role.AUDITOR, {Role.AUDITOR}),
        (Role.AGENT, {Role.AGENT}),
    ],
)
def test_principal_has_follows_the_role_hierarchy(role: str, granted: set[str]) -> None:
    """A principal has exactly the roles its own role includes."""
    principal = Principal(name="someone", role=role)
    assert {required for required in Role.ALL if principal.has(required)} == granted


@pytest.mark.parametrize(
    ("principal", "stage", "allowed"),
    [
        (Principal("writer", Role.AGENT, frozenset({"draft", "review"})), "draft", True),
        (Principal("writer", Role.AGENT, frozenset({"draft"})), "review", False),
        (Principal("writer", Role.AGENT), "draft", False),
        (Principal("boss", Role.ADMIN, frozenset({"draft"})), "draft", False),
        (Principal("ops", Role.OPERATOR, frozenset({"draft"})), "draft", False),
    ],
)
def test_principal_may_work_only_as_an_agent_in_scope(
    principal: Principal, stage: str, allowed: bool
) -> None:
    """Only agents may work on stages, and only on those in their scope."""
    assert principal.may_work_on(stage) is allowed


@pytest.mark.parametrize(
    ("principal", "actor"),
    [
        (Principal("writer", Role.AGENT), "agent:writer"),
        (Principal("ops", Role.OPERATOR), "operator:ops"),
        (Principal("audit", Role.AUDITOR), "auditor:audit"),
        (Principal("root", Role.ADMIN), "admin:root"),
        (Principal(BUILTIN_ADMIN, Role.ADMIN, builtin=True), "admin:builtin"),
    ],
)
def test_principal_actor_is_role_and_name(principal: Principal, actor: str) -> None:
    """The actor recorded in events is role:name, and admin:builtin for the built-in admin."""
    assert principal.actor == actor


@pytest.mark.parametrize("role", [Role.AGENT, Role.OPERATOR])
def test_a_registered_principal_named_admin_is_not_recorded_as_the_builtin_admin(role: str) -> None:
    """A non-admin principal that happens to be named 'admin' keeps its own role in the actor."""
    assert Principal(BUILTIN_ADMIN, role).actor == f"{role}:{BUILTIN_ADMIN}"
