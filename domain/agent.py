"""The Agent aggregate: an identity that acts on items, with a role and a scope of stages."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidCommand, StateConflict

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


class Agent(Aggregate):
    @staticmethod
    def create_id(name: str) -> uuid.UUID:
        return uuid.uuid5(AGENT_NAMESPACE, name)

    @event("AgentRegistered")
    def __init__(
        self,
        name: str,
        role: str,
        stages: list[str],
        token_hash: str,
        request_digest: str,
        actor: str,
        caused_by: str,
    ) -> None:
        if role not in Role.ALL:
            raise InvalidCommand(f"role must be one of {', '.join(Role.ALL)}, not {role!r}")
        self.name = name
        self.role = role
        self.stages = stages
        self.token_hash = token_hash
        self.request_digest = request_digest
        self.disabled = False

    def token_matches(self, token: str) -> bool:
        return not self.disabled and hmac.compare_digest(self.token_hash, hash_token(token))

    def may_work_on(self, stage: str) -> bool:
        return self.role == Role.AGENT and stage in self.stages

    def disable(self, *, actor: str, caused_by: str) -> None:
        if self.disabled:
            raise StateConflict(f"agent {self.name!r} is disabled already")
        self._disabled(actor=actor, caused_by=caused_by)

    def rotate_token(self, *, token_hash: str, actor: str, caused_by: str) -> None:
        if self.disabled:
            raise StateConflict(f"agent {self.name!r} is disabled")
        self._token_rotated(token_hash=token_hash, actor=actor, caused_by=caused_by)

    def change_stages(self, *, stages: list[str], actor: str, caused_by: str) -> bool:
        if self.role != Role.AGENT and stages:
            raise InvalidCommand(f"only an agent has stages; {self.name!r} is {self.role}")
        if stages == self.stages:
            return False
        self._stages_changed(stages=stages, actor=actor, caused_by=caused_by)
        return True

    @event("TokenRotated")
    def _token_rotated(self, token_hash: str, actor: str, caused_by: str) -> None:
        self.token_hash = token_hash

    @event("AgentScopeChanged")
    def _stages_changed(self, stages: list[str], actor: str, caused_by: str) -> None:
        self.stages = stages

    @event("AgentDisabled")
    def _disabled(self, actor: str, caused_by: str) -> None:
        self.disabled = True
