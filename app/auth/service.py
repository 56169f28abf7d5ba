"""Users and API tokens. Only a hash of each token is stored."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from app.models import ApiToken, User, utcnow

# reviewer: approves label versions or sends them back (admins review too); otherwise as an annotator.
ROLES = ("admin", "annotator", "reviewer")
# Accounts that act for NextCase itself (the bulk importer): they author rows, but cannot log in,
# hold no token and are not admins.
SYSTEM_ROLE = "system"
TOKEN_PREFIX = "nc_"


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once, never stored
    record: ApiToken


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, name: str, role: str) -> User:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}, got {role!r}", field="role")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"a user named {name!r} already exists", field="name")
    user = User(name=name, role=role)
    session.add(user)
    session.flush()
    return user


def issue_token(session: Session, user: User) -> IssuedToken:
    if user.role == SYSTEM_ROLE:
        raise Forbidden(f"{user.name!r} is a system user: it cannot log in or hold a token")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10])
    session.add(record)
    session.flush()
    return IssuedToken(token, record)


def authenticate(session: Session, token: str) -> User:
    row = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        raise Unauthorized("the bearer token is not valid")
    api_token, user = row
    if api_token.revoked_at is not None:
        raise Unauthorized("the bearer token has been revoked")
    if user.disabled:
        raise Unauthorized("the user of this token is disabled")
    if user.role == SYSTEM_ROLE:
        raise Unauthorized("system users cannot log in")
    return user


class TokenCache:
    """Users of recently authenticated tokens, for NEXTCASE_TOKEN_CACHE_S seconds (0 turns it off).

    Authentication was a transaction of its own on every request (4 of a claim's 18 database round trips).
    Within the bound a token is checked in memory; a revocation through this API process takes effect at once
    (it clears the cache), one made elsewhere (another API process, the database) within the bound.
    """

    def __init__(self) -> None:
        self._users: dict[str, tuple[float, User]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> User | None:
        hit = self._users.get(hash_token(token))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, token: str, user: User, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._users) >= 10_000:  # a bound on memory, whatever clients send
                now = time.monotonic()
                self._users = {k: v for k, v in self._users.items() if v[0] > now}
            self._users[hash_token(token)] = (time.monotonic() + ttl, user)

    def clear(self) -> None:
        with self._lock:
            self._users.clear()


TOKENS = TokenCache()


def authenticate_cached(token: str) -> User:
    """:func:`authenticate` in a short transaction of its own, or the cached answer of a recent one."""
    from app.core.config import get_settings
    from app.core.db import session_scope

    user = TOKENS.get(token)
    if user is None:
        with session_scope() as session:
            user = authenticate(session, token)
        TOKENS.put(token, user, get_settings().token_cache_s)
    return user


def require_role(user: User, role: str) -> None:
    if role == "admin" and user.role != "admin":
        raise Forbidden(f"this action needs the admin role; {user.name!r} is {user.role}")


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", field="user_id")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)))


def revoke_token(session: Session, token_id: int) -> ApiToken:
    record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFound(f"token {token_id} does not exist", field="token_id")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        TOKENS.clear()
        # Again once committed: a request that checked the token between the clear and the commit re-cached it.
        event.listen(session, "after_commit", lambda _session: TOKENS.clear(), once=True)
    return record


def get_or_create_system_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role=SYSTEM_ROLE)
        session.add(user)
        session.flush()
    return user


def get_user_by_name(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}", field="name")
    return user


def user_exists(session: Session, name: str) -> bool:
    return session.scalar(select(User.id).where(User.name == name)) is not None


def has_usable_admin(session: Session) -> bool:
    """An enabled admin exists (system users and disabled admins do not count)."""
    return session.scalar(select(User.id).where(User.role == "admin", User.disabled.is_(False)).limit(1)) is not None
