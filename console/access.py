"""Who may use the console: users from `console.users` (argon2 hashes), sessions in memory, CSRF tokens.

Without `console.users` the console is open, to loopback clients only (as the API without a token), and
whoever uses it acts as the operator `local`. Sessions live in this process: a restart logs everyone out.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

COOKIE = b"pamgate_console"
IDLE = 8 * 3600            # a session unused for this long is over
REVEAL_FOR = 15 * 60       # identities revealed for one patient stay visible this long
LOCAL_USER = "local"

_hasher = PasswordHasher()


def console_hash_password(password: str) -> str:
    """The argon2 hash of `password`, for `console.users[].password_hash`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


@dataclass
class Session:
    token: str
    csrf: str
    user: str | None = None
    role: str | None = None
    revealed: dict = field(default_factory=dict)    # patient id -> monotonic time until which it is revealed
    seen: float = field(default_factory=time.monotonic)

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def reveals(self, patient_id) -> bool:
        until = self.revealed.get(patient_id)
        return until is not None and until > time.monotonic()

    def reveal(self, patient_id) -> None:
        self.revealed[patient_id] = time.monotonic() + REVEAL_FOR


class Access:
    def __init__(self, users):
        self.users = {u.name: u for u in users}
        self.open = not self.users
        self.sessions: dict[str, Session] = {}

    def new_session(self) -> Session:
        s = Session(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        if self.open:
            s.user, s.role = LOCAL_USER, "operator"
        self.sessions[s.token] = s
        self._expire()
        return s

    def session(self, token: str | None) -> Session | None:
        s = self.sessions.get(token or "")
        if s is None or time.monotonic() - s.seen > IDLE:
            return None
        s.seen = time.monotonic()
        return s

    def login(self, old: Session, name: str, password: str) -> Session | None:
        """A new session (a new token: the one seen before login is not reused) for good credentials."""
        user = self.users.get(name)
        # a hash is checked even for an unknown name, so the answer takes as long either way
        ok = verify_password(user.password_hash if user else _DUMMY, password) and user is not None
        if not ok:
            return None
        self.sessions.pop(old.token, None)
        s = self.new_session()
        s.user, s.role = user.name, user.role
        return s

    def logout(self, s: Session) -> None:
        self.sessions.pop(s.token, None)

    def csrf_ok(self, s: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(s.csrf.encode(), given.encode())

    def _expire(self) -> None:
        if len(self.sessions) > 1000:
            now = time.monotonic()
            for t in [t for t, s in self.sessions.items() if now - s.seen > IDLE]:
                del self.sessions[t]


_DUMMY = console_hash_password(secrets.token_urlsafe(16))
