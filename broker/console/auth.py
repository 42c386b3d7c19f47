"""Console credentials, roles, sessions and CSRF tokens (pure: no I/O but the users file).

Tokens are 256-bit random strings handed out once by `trust-broker console add-user`; only
their SHA-256 is stored. A fast hash is enough because nobody can guess 256 random bits:
a slow password hash protects low-entropy secrets, which these are not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import orjson

from broker.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Compared against when no user exists, so a refusal costs the same with an empty file.
_NOBODY = "0" * 64


class Role(StrEnum):
    """What a console user may do; security and ops are separate, neither implies the other."""

    VIEWER = "viewer"
    SECURITY = "security"
    OPS = "ops"


class Permission(StrEnum):
    """The three kinds of console action."""

    VIEW = "view"  # every page, the what-if preview
    REVIEW = "review"  # release, confirm a block, approve, reject, request evidence, rescore
    POLICY = "policy"  # put a policy change in force


GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.VIEW: frozenset(Role),
    Permission.REVIEW: frozenset({Role.SECURITY}),
    Permission.POLICY: frozenset({Role.OPS}),
}


def allowed(role: Role, permission: Permission) -> bool:
    """True when `role` holds `permission`."""
    return role in GRANTS[permission]


def new_token() -> str:
    """A fresh random bearer token (shown once, never stored)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The hex SHA-256 kept in the users file instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class User:
    """One console user; `token_sha256` never leaves this module's callers' memory."""

    name: str
    role: Role
    token_sha256: str = field(repr=False)


@dataclass(frozen=True)
class Users:
    """The users file: who may sign in, with which role."""

    users: tuple[User, ...] = ()

    def verify(self, token: str) -> User | None:
        """The user whose token this is, or None; every hash is compared in constant time
        and none is skipped, so the time taken says nothing about which one matched."""
        digest = hash_token(token)
        found: User | None = None
        for user in self.users or (User("", Role.VIEWER, _NOBODY),):
            if hmac.compare_digest(digest, user.token_sha256) and user.name:
                found = user
        return found

    def with_user(self, name: str, role: Role, token: str) -> Users:
        """A copy with `name` added, or its role and token replaced when it exists."""
        check_name(name)
        kept = tuple(user for user in self.users if user.name != name)
        return Users((*kept, User(name, role, hash_token(token))))

    def to_json(self) -> bytes:
        """The file's content."""
        rows = [
            {"name": u.name, "role": u.role.value, "token_sha256": u.token_sha256}
            for u in self.users
        ]
        return orjson.dumps({"users": rows}, option=orjson.OPT_INDENT_2)


def check_name(name: str) -> str:
    """A user name, refused unless it is 1-64 letters, digits or `_.@-`."""
    if not _NAME.fullmatch(name):
        raise ConfigError("a console user name is 1-64 characters of A-Z a-z 0-9 _ . @ -")
    return name


def parse_users(data: bytes) -> Users:
    """Users from the file's JSON; a malformed entry is refused with its position."""
    try:
        rows = orjson.loads(data)["users"] if data.strip() else []
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError('a users file is JSON {"users": [...]}') from exc
    users: list[User] = []
    for index, row in enumerate(rows):
        try:
            user = User(check_name(row["name"]), Role(row["role"]), row["token_sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"users[{index}] needs name, role and token_sha256") from exc
        if not _HEX64.fullmatch(user.token_sha256):
            raise ConfigError(f"users[{index}].token_sha256 is not 64 lowercase hex characters")
        users.append(user)
    return Users(tuple(users))


def load_users(path: Path) -> Users:
    """Read a users file; a missing file means nobody may sign in."""
    if not path.exists():
        return Users()
    return parse_users(path.read_bytes())


def save_users(path: Path, users: Users) -> None:
    """Write a users file atomically, readable by its owner only."""
    handle, temporary = tempfile.mkstemp(dir=path.parent or Path("."), prefix=".users-")
    try:
        os.fchmod(handle, 0o600)
        os.write(handle, users.to_json() + b"\n")
        os.close(handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class Session:
    """A signed-in browser: who, until when, and the CSRF token bound to it."""

    user: User
    csrf: str
    expires_at: float


class Sessions:
    """Server-side sessions in memory, keyed by the SHA-256 of the cookie value."""

    def __init__(self, ttl_s: float = 8 * 3600, clock: Callable[[], float] = time.monotonic):
        self._ttl_s = ttl_s
        self._clock = clock
        self._by_hash: dict[str, Session] = {}

    def create(self, user: User) -> tuple[str, Session]:
        """A new session id (for the cookie) and its session."""
        self._expire()
        session_id = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), self._clock() + self._ttl_s)
        self._by_hash[hash_token(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session for a cookie value, or None."""
        session = self._by_hash.get(hash_token(session_id))
        if session is None or session.expires_at <= self._clock():
            return None
        return session

    def drop(self, session_id: str) -> None:
        """Sign out."""
        self._by_hash.pop(hash_token(session_id), None)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._by_hash.items() if s.expires_at <= now]:
            del self._by_hash[key]


def csrf_ok(session: Session, presented: str | None) -> bool:
    """True when the form or header carries this session's CSRF token."""
    return presented is not None and hmac.compare_digest(
        session.csrf.encode(), presented.encode("utf-8", "replace")
    )
