"""Console sessions: a signed, expiring cookie naming the principal, and the CSRF token bound to it.

The cookie holds no token. It names the principal, when it expires, and a fingerprint of the
credential it signed in with; every request checks the fingerprint against the agent's current
token hash (or the built-in admin token), so a disabled agent or a rotated token ends its
sessions at once. Signed with `STATEOWNER_SESSION_SECRET`, several `serve` processes agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from api.auth import BUILTIN_ADMIN, Principal
from domain.agent import Role
from domain.application import StateOwner
from domain.errors import NotFound

SESSION_COOKIE = "so_session"
SIGNIN_COOKIE = "so_signin"
CSRF_FIELD = "csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that accepts any text a client sends (not only ASCII)."""
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Session:
    name: str
    role: str
    builtin: bool
    fingerprint: str
    session_id: str
    expires: int


class Sessions:
    """Issues and reads session cookies; checks CSRF tokens against them."""

    def __init__(self, secret: bytes, minutes: int, admin_token: str | None) -> None:
        self._secret = secret
        self.minutes = minutes
        self._admin_token = admin_token

    @classmethod
    def from_secret(cls, secret: str | None, minutes: int, admin_token: str | None) -> Sessions:
        # Unset: a random secret, so sessions last only as long as this process.
        key = secret.encode() if secret else secrets.token_bytes(32)
        return cls(key, minutes, admin_token)

    def _mac(self, purpose: str, message: str) -> str:
        digest = hmac.new(self._secret, f"{purpose}\n{message}".encode(), hashlib.sha256)
        return _b64(digest.digest())

    def fingerprint(self, principal: Principal, app: StateOwner) -> str:
        """What the session is checked against on each request: the credential, hashed again."""
        if principal.builtin:
            return self._mac("builtin", self._admin_token or "")[:22]
        return self._mac("agent", app.agent(principal.name).token_hash)[:22]

    def issue(self, principal: Principal, fingerprint: str, now: datetime) -> str:
        payload = {
            "n": principal.name,
            "r": principal.role,
            "b": principal.builtin,
            "f": fingerprint,
            "s": secrets.token_urlsafe(16),
            "e": int(now.timestamp()) + self.minutes * 60,
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac('session', body)}"

    def read(self, cookie: str | None, now: datetime) -> Session | None:
        """The session a cookie carries, or None when it is missing, tampered with or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        if not _same(mac, self._mac("session", body)):
            return None
        try:
            payload = json.loads(_unb64(body))
            session = Session(
                name=str(payload["n"]),
                role=str(payload["r"]),
                builtin=bool(payload["b"]),
                fingerprint=str(payload["f"]),
                session_id=str(payload["s"]),
                expires=int(payload["e"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > now.timestamp() else None

    def principal(self, session: Session, app: StateOwner) -> Principal | None:
        """The session's principal as it stands now; None once its credential has changed."""
        if session.builtin:
            if not self._admin_token or not _same(
                session.fingerprint, self._mac("builtin", self._admin_token)[:22]
            ):
                return None
            return Principal(name=BUILTIN_ADMIN, role=Role.ADMIN, builtin=True)
        try:
            agent = app.agent(session.name)
        except NotFound:
            return None
        current = self._mac("agent", agent.token_hash)[:22]
        if agent.disabled or not _same(session.fingerprint, current):
            return None
        return Principal(name=agent.name, role=agent.role, stages=frozenset(agent.stages))

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.session_id)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and _same(str(token), self.csrf_token(session))

    def signin_token(self) -> str:
        """A random value for the sign-in form, matched against the same value in a cookie."""
        return secrets.token_urlsafe(24)
