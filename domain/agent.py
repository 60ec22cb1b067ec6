"""The Agent aggregate: an identity that acts on items, with a role and a scope of stages."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

from domain.errors import InvalidCommand, InvalidField, StateConflict
from domain.recorded import Recorded, RecordedAggregate
from domain.values import By, Registration

AGENT_NAMESPACE = uuid.UUID("c4f0e7a9-2d1b-4b6e-a3c8-7e5d9f1a2b03")


class Role:
    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    AGENT = "agent"

    ALL = (ADMIN, OPERATOR, AUDITOR, AGENT)


# admin ⊃ operator ⊃ auditor; an agent stands apart, with its own scoped powers.
ROLE_INCLUDES: dict[str, frozenset[str]] = {
    Role.ADMIN: frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR}),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.AUDITOR}),
    Role.AUDITOR: frozenset({Role.AUDITOR}),
    Role.AGENT: frozenset({Role.AGENT}),
}


def role_allows(role: str, required: str) -> bool:
    return required in ROLE_INCLUDES.get(role, frozenset())


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Agent(RecordedAggregate):
    """An identity that acts on items: its role, the stages it may work on, its token's hash."""

    if TYPE_CHECKING:
        name: str
        role: str
        stages: list[str]
        token_hash: str
        request_digest: str
        disabled: bool
        max_concurrent_leases: int | None

    class AgentRegistered(Aggregate.Created, Recorded):
        name: str
        role: str
        stages: list[str]
        token_hash: str
        request_digest: str

        def apply(self, agent: Agent) -> None:
            agent.name = self.name
            agent.role = self.role
            agent.stages = self.stages
            agent.token_hash = self.token_hash
            agent.request_digest = self.request_digest
            agent.disabled = False
            agent.max_concurrent_leases = None

    class TokenRotated(Recorded):
        token_hash: str

        def apply(self, agent: Agent) -> None:
            agent.token_hash = self.token_hash

    class AgentScopeChanged(Recorded):
        stages: list[str]

        def apply(self, agent: Agent) -> None:
            agent.stages = self.stages

    class AgentLimitsSet(Recorded):
        """How many leases the agent may hold at once (None: no limit of its own)."""

        max_concurrent_leases: int | None

        def apply(self, agent: Agent) -> None:
            agent.max_concurrent_leases = self.max_concurrent_leases

    class AgentDisabled(Recorded):
        def apply(self, agent: Agent) -> None:
            agent.disabled = True

    @staticmethod
    def create_id(name: str) -> uuid.UUID:
        return uuid.uuid5(AGENT_NAMESPACE, name)

    @classmethod
    def register(cls, registration: Registration, by: By) -> Agent:
        if registration.role not in Role.ALL:
            raise InvalidCommand(
                f"role must be one of {', '.join(Role.ALL)}, not {registration.role!r}"
            )
        agent = cls._begin(
            cls.AgentRegistered,
            cls.create_id(registration.name),
            by,
            name=registration.name,
            role=registration.role,
            stages=list(registration.stages),
            token_hash=registration.token_hash,
            request_digest=registration.request_digest,
        )
        if registration.max_concurrent_leases is not None:
            agent.set_limits(registration.max_concurrent_leases, by)
        return agent

    def set_limits(self, max_concurrent_leases: int | None, by: By) -> None:
        if max_concurrent_leases is not None and max_concurrent_leases < 1:
            raise InvalidField("max_concurrent_leases", "must be at least 1, or null for none")
        if max_concurrent_leases != self.max_concurrent_leases:
            self._record(Agent.AgentLimitsSet, by, max_concurrent_leases=max_concurrent_leases)

    def token_matches(self, token: str) -> bool:
        return not self.disabled and hmac.compare_digest(self.token_hash, hash_token(token))

    def may_work_on(self, stage: str) -> bool:
        return self.role == Role.AGENT and stage in self.stages

    def disable(self, by: By) -> None:
        if self.disabled:
            raise StateConflict(f"agent {self.name!r} is disabled already")
        self._record(Agent.AgentDisabled, by)

    def rotate_token(self, token_hash: str, by: By) -> None:
        if self.disabled:
            raise StateConflict(f"agent {self.name!r} is disabled")
        self._record(Agent.TokenRotated, by, token_hash=token_hash)

    def change_stages(self, stages: list[str], by: By) -> bool:
        """Record a new scope; returns False (and records nothing) when nothing changed."""
        if self.role != Role.AGENT and stages:
            # The request is well formed; this identity's role is what refuses it.
            raise StateConflict(f"only an agent has stages; {self.name!r} is {self.role}")
        if stages == self.stages:
            return False
        self._record(Agent.AgentScopeChanged, by, stages=stages)
        return True
