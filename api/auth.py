"""Who is calling: bearer tokens, roles and stage scopes."""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass, field

from api.errors import unauthorized
from domain.agent import Agent, Role, role_allows
from domain.application import StateOwner
from domain.errors import NotFound
from domain.values import Claimant

TOKEN_PREFIX = "so"  # noqa: S105 - a format marker, not a secret
BUILTIN_ADMIN = "admin"
# One answer for every token refused, whatever the reason: no agent name can be probed.
INVALID_TOKEN = "the token is not valid"  # noqa: S105 - a message, not a secret


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    stages: frozenset[str] = field(default_factory=frozenset)
    builtin: bool = False
    max_leases: int | None = None

    @property
    def actor(self) -> str:
        return "admin:builtin" if self.builtin else f"{self.role}:{self.name}"

    def has(self, role: str) -> bool:
        return role_allows(self.role, role)

    def may_work_on(self, stage: str) -> bool:
        return self.role == Role.AGENT and stage in self.stages

    @property
    def claimant(self) -> Claimant:
        """The caller as an agent asking for work: its name and the stages it may work on now."""
        stages = self.stages if self.role == Role.AGENT else frozenset()
        return Claimant(self.name, stages, self.max_leases)


def new_token(agent_id: uuid.UUID) -> str:
    """The token names its agent, so it can be checked against one stored hash."""
    return f"{TOKEN_PREFIX}_{agent_id.hex}_{secrets.token_urlsafe(32)}"


def agent_id_of(token: str) -> uuid.UUID | None:
    prefix, _, rest = token.partition("_")
    agent_hex, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not secret:
        return None
    try:
        return uuid.UUID(hex=agent_hex)
    except ValueError:
        return None


@dataclass(frozen=True)
class Credentials:
    """A bearer token as sent: the built-in admin's, or one naming an agent."""

    token: str
    agent_id: uuid.UUID | None


ADMIN_PRINCIPAL = Principal(name=BUILTIN_ADMIN, role=Role.ADMIN, builtin=True)


def credentials(authorization: str | None, admin_token: str | None) -> Credentials:
    """The token an Authorization header carries (401 when there is none, or it names nobody)."""
    if not authorization:
        raise unauthorized("send Authorization: Bearer TOKEN")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send Authorization: Bearer TOKEN")
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Credentials(token, None)
    agent_id = agent_id_of(token)
    if agent_id is None:
        raise unauthorized(INVALID_TOKEN)
    return Credentials(token, agent_id)


def principal_of(credentials: Credentials, agent: Agent | None) -> Principal:
    """Who the credentials prove the caller is, given the agent they name as it stands."""
    if credentials.agent_id is None:
        return ADMIN_PRINCIPAL
    if agent is None or not agent.token_matches(credentials.token):
        raise unauthorized(INVALID_TOKEN)
    return Principal(
        name=agent.name,
        role=agent.role,
        stages=frozenset(agent.stages),
        max_leases=agent.max_concurrent_leases,
    )


def find_agent(app: StateOwner, agent_id: uuid.UUID) -> Agent | None:
    try:
        return app.agent_by_id(agent_id)
    except NotFound:
        return None


def authenticate(authorization: str | None, app: StateOwner, admin_token: str | None) -> Principal:
    found = credentials(authorization, admin_token)
    if found.agent_id is None:
        return ADMIN_PRINCIPAL
    return principal_of(found, find_agent(app, found.agent_id))
