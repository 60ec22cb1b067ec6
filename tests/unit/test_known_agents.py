"""The agents a process remembers: only while it listens for changes, and never a copy read
before a change it has heard of."""

from __future__ import annotations

import uuid

import pytest

from api.principals import KnownAgents
from domain.agent import Agent
from domain.values import By, Registration

pytestmark = pytest.mark.unit

OPS = By("operator:ops", "r")


def _agent(name: str = "writer") -> Agent:
    return Agent.register(Registration(name, "agent", ("draft",), "hash"), OPS)


def _listening() -> KnownAgents:
    known = KnownAgents("postgresql://unused")
    known.connected.set()
    return known


def test_an_agent_read_is_remembered_while_listening() -> None:
    """Remembered after a read, the agent is answered from memory."""
    known = _listening()
    agent = _agent()
    known.remember(agent, known.changes())
    assert known.get(agent.id) is agent


def test_nothing_is_remembered_without_the_listener() -> None:
    """Not connected: every caller is read afresh, nothing answered from memory."""
    known = KnownAgents("postgresql://unused")
    agent = _agent()
    known.remember(agent, known.changes())
    assert known.get(agent.id) is None
    known.connected.set()
    assert known.get(agent.id) is None


def test_a_change_heard_drops_the_agent() -> None:
    """A notice for the agent's id forgets it; others stay."""
    known = _listening()
    writer, editor = _agent("writer"), _agent("editor")
    known.remember(writer, known.changes())
    known.remember(editor, known.changes())
    known._heard(str(writer.id))
    assert known.get(writer.id) is None
    assert known.get(editor.id) is editor


def test_a_read_that_a_change_overtook_is_not_remembered() -> None:
    """A change heard between the start of a read and its end: the copy read may be stale."""
    known = _listening()
    agent = _agent()
    before = known.changes()
    known.forget(uuid.uuid4())
    known.remember(agent, before)
    assert known.get(agent.id) is None
