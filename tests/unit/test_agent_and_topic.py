"""Unit tests of the Agent aggregate (roles, tokens, scope) and the Topic aggregate (describe).

Both aggregates live in memory only.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from domain.agent import ROLE_INCLUDES, Agent, Role, hash_token, role_allows
from domain.errors import InvalidCommand, StateConflict
from domain.topic import Topic
from domain.values import By, Registration, TopicFacts

pytestmark = pytest.mark.unit

TOKEN = "so_secret-token"
ADMIN = By("admin:builtin", "req-1")
OPS = By("operator:ops", "req-2")
FACTS = TopicFacts("alice", 1, ("daily",), {"region": "eu"})


def _agent(role: str = Role.AGENT, stages: list[str] | None = None, name: str = "writer") -> Agent:
    stages = ["draft"] if stages is None else stages
    return Agent.register(
        Registration(name, role, tuple(stages), hash_token(TOKEN), "digest"), ADMIN
    )


def _topic() -> Topic:
    return Topic.define("news", FACTS, By("operator:ops", "req-1"))


# -- roles ---------------------------------------------------------------------------------------

ALLOWED = {
    (Role.ADMIN, Role.ADMIN),
    (Role.ADMIN, Role.OPERATOR),
    (Role.ADMIN, Role.AUDITOR),
    (Role.OPERATOR, Role.OPERATOR),
    (Role.OPERATOR, Role.AUDITOR),
    (Role.AUDITOR, Role.AUDITOR),
    (Role.AGENT, Role.AGENT),
}


@pytest.mark.parametrize("role", Role.ALL)
@pytest.mark.parametrize("required", Role.ALL)
def test_role_allows_encodes_admin_over_operator_over_auditor_and_agent_apart(
    role: str, required: str
) -> None:
    """admin includes operator includes auditor; agent is allowed only what needs an agent."""
    assert role_allows(role, required) == ((role, required) in ALLOWED)


def test_role_allows_nothing_for_an_unknown_role() -> None:
    """A role the system does not know grants nothing, not even itself."""
    assert not any(role_allows("superuser", required) for required in [*Role.ALL, "superuser"])


def test_every_role_has_an_inclusion_entry() -> None:
    """Each of the four roles is described in the inclusion table, so none grants by accident."""
    assert set(ROLE_INCLUDES) == set(Role.ALL)


# -- the Agent aggregate ------------------------------------------------------------------------------


def test_registering_an_agent_records_agent_registered_with_its_hash() -> None:
    """Registration records AgentRegistered with the token's hash, never the token itself."""
    agent = _agent()
    (registered,) = agent.collect_events()
    assert type(registered).__name__ == "AgentRegistered"
    assert (registered.name, registered.role, registered.stages) == ("writer", "agent", ["draft"])
    assert registered.token_hash == hash_token(TOKEN)
    assert TOKEN not in repr(vars(registered))
    assert agent.disabled is False


def test_invalid_role_is_an_invalid_command() -> None:
    """An agent cannot be registered with a role outside the four known ones."""
    with pytest.raises(InvalidCommand, match="role must be one of admin, operator, auditor, agent"):
        _agent(role="root")


def test_create_id_is_deterministic_by_name() -> None:
    """The same name always yields the same agent id; another name another id."""
    assert Agent.create_id("writer") == Agent.create_id("writer")
    assert Agent.create_id("writer") != Agent.create_id("reviewer")
    assert isinstance(Agent.create_id("writer"), uuid.UUID)


def test_hash_token_is_a_stable_sha256_hex_digest() -> None:
    """hash_token is deterministic, 64 hex chars, and differs between tokens."""
    assert hash_token(TOKEN) == hash_token(TOKEN)
    assert len(hash_token(TOKEN)) == 64
    int(hash_token(TOKEN), 16)
    assert hash_token(TOKEN) != hash_token(TOKEN + "x")


def test_token_matches_only_the_right_token() -> None:
    """The registered token matches; a different or truncated one does not."""
    agent = _agent()
    assert agent.token_matches(TOKEN)
    assert not agent.token_matches(TOKEN + "x")
    assert not agent.token_matches(TOKEN[:-1])
    assert not agent.token_matches("")


def test_a_disabled_agent_matches_no_token() -> None:
    """After disabling, even the right token no longer matches."""
    agent = _agent()
    agent.collect_events()
    agent.disable(ADMIN)
    assert [type(e).__name__ for e in agent.collect_events()] == ["AgentDisabled"]
    assert agent.disabled
    assert not agent.token_matches(TOKEN)


def test_disabling_twice_is_a_state_conflict() -> None:
    """An agent disabled already cannot be disabled again, and no event is recorded."""
    agent = _agent()
    agent.disable(ADMIN)
    agent.collect_events()
    with pytest.raises(StateConflict, match="disabled already"):
        agent.disable(ADMIN)
    assert agent.collect_events() == []


@pytest.mark.parametrize(
    ("role", "stages", "stage", "allowed"),
    [
        (Role.AGENT, ["draft", "review"], "review", True),
        (Role.AGENT, ["draft"], "review", False),
        (Role.AGENT, [], "draft", False),
        (Role.ADMIN, ["draft"], "draft", False),
        (Role.OPERATOR, ["draft"], "draft", False),
    ],
)
def test_agent_may_work_only_on_stages_in_its_scope(
    role: str, stages: list[str], stage: str, allowed: bool
) -> None:
    """Only an agent-role identity may work, and only on the stages it was given."""
    assert _agent(role=role, stages=stages).may_work_on(stage) is allowed


# -- the Topic aggregate ------------------------------------------------------------------------------


def test_topic_create_id_is_deterministic_by_name() -> None:
    """The same topic name always yields the same id; another name another id."""
    assert Topic.create_id("news") == Topic.create_id("news")
    assert Topic.create_id("news") != Topic.create_id("sport")


def test_describe_without_changes_returns_false_and_records_nothing() -> None:
    """Describing a topic exactly as it is records no event and reports no change."""
    topic = _topic()
    topic.collect_events()
    changed = topic.describe(FACTS, OPS)
    assert changed is False
    assert topic.collect_events() == []
    assert topic.version == 1


@pytest.mark.parametrize(
    "change",
    [
        {"owner": "bob"},
        {"owner": None},
        {"priority": 2},
        {"tags": ("daily", "urgent")},
        {"tags": ()},
        {"metadata": {"region": "us"}},
    ],
)
def test_describe_with_a_change_returns_true_and_records_topic_updated(
    change: dict[str, Any],
) -> None:
    """Any changed field records TopicUpdated carrying the new values, and reports a change."""
    topic = _topic()
    topic.collect_events()
    facts = replace(FACTS, **change)
    assert topic.describe(facts, OPS) is True
    (updated,) = topic.collect_events()
    assert type(updated).__name__ == "TopicUpdated"
    assert updated.name == "news"
    assert (updated.owner, updated.priority, updated.tags, updated.metadata) == (
        facts.owner,
        facts.priority,
        list(facts.tags),
        facts.metadata,
    )
    assert topic.facts == facts
    assert topic.version == 2
