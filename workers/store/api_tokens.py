"""The HTTP API's tokens (workers.api): created, listed, revoked, and checked at each request.

A token is `opsq_<name-free random part>`; only its SHA-256 is stored. The secret has 256 bits of entropy, so
a plain (unsalted) hash is safe against guessing, and it lets a request find its token by one indexed lookup
instead of trying every row. Lookups compare the hash in constant time all the same.

A token may have an owner, the person it acts for: the audit trail still names the token (`api:<name>`), but an
approval policy's self-approval rule compares persons (person_of), so one person cannot submit through a token
and approve as themself in Slack or on the CLI, nor the reverse."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workers.errors import NotFound, SubmitError
from workers.store import audit
from workers.store.db import session
from workers.store.models import ApiAction, ApiToken, as_utc, utcnow

#: What each role may do (the API checks these, workers.api.app). `operate` and `approve` read everything
#: (the state they act on); `submit` reads only what it submitted; `admin` may do all of it.
ROLES: dict[str, frozenset[str]] = {
    "submit": frozenset({"submit"}),
    "operate": frozenset({"submit", "read", "operate"}),
    "approve": frozenset({"read", "approve"}),
    "admin": frozenset({"submit", "read", "operate", "approve"}),
}
PREFIX = "opsq_"
ACTOR_PREFIX = "api:"
LAST_USED_EVERY_S = 60
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    owner: str | None = None

    @property
    def actor(self) -> str:
        """The name the audit trail records for what this token changes."""
        return f"{ACTOR_PREFIX}{self.name}"

    def may(self, permission: str) -> bool:
        return self.revoked_at is None and permission in ROLES.get(self.role, frozenset())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role,
                "created_at": self.created_at.isoformat(),
                "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None, "owner": self.owner}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(row: ApiToken) -> Token:
    return Token(row.name, row.role, as_utc(row.created_at), as_utc(row.last_used_at), as_utc(row.revoked_at),
                 row.owner)


def _check_owner(owner: str) -> None:
    if not owner.strip() or owner != owner.strip() or len(owner) > 100 or owner.startswith(ACTOR_PREFIX):
        raise SubmitError(f"a token's owner is the person it acts for, as approvals name them (1 to 100 "
                          f"characters, not starting with {ACTOR_PREFIX!r} nor with a space): {owner!r}")


def create(name: str, role: str, *, owner: str | None = None, actor: str | None = None) -> str:
    """A new token; returns its secret (shown once: only its hash is kept). `owner`: the person it acts for, as
    approval policies and OPSQ_SLACK_APPROVERS name them (`dana`)."""
    if owner is not None:
        _check_owner(owner)
    if role not in ROLES:
        raise SubmitError(f"unknown role {role!r} (use one of: {', '.join(ROLES)})")
    if not _NAME.match(name):
        raise SubmitError("a token's name is 1 to 64 letters, digits, '_', '.', '@' or '-', starting with a letter "
                          "or digit")
    secret = PREFIX + secrets.token_urlsafe(32)
    try:
        with session() as s:
            s.execute(insert(ApiToken).values(name=name, role=role, secret_hash=_hash(secret), created_at=utcnow(),
                                              owner=owner))
            audit.append("api_token_create", f"api_token:{name}", {"role": role, "owner": owner}, actor=actor,
                         conn=s.connection())
    except IntegrityError:
        raise SubmitError(f"a token named {name!r} exists already (revoked ones keep their name: choose "
                          "another)") from None
    return secret


def revoke(name: str, *, actor: str | None = None) -> Token:
    with session() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise NotFound(f"no API token named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.append("api_token_revoke", f"api_token:{name}", {"role": row.role}, actor=actor,
                         conn=s.connection())
        return _view(row)


def set_owner(name: str, owner: str, *, actor: str | None = None) -> tuple[Token, str | None]:
    """Give a token its owner, or another one; returns the token and its previous owner. For the tokens made
    before owners existed (migration 0011): until one has its owner, what is submitted through it and approved
    by that person under their own name is not seen as one person's. A revoked token may be given one too: who
    submitted through it stays who submitted (person_of). An owner is never removed, only replaced."""
    _check_owner(owner)
    with session() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise NotFound(f"no API token named {name!r} (`opsq api token list` shows them)")
        previous = row.owner
        if previous != owner:
            row.owner = owner
            audit.append("api_token_owner", f"api_token:{name}", {"owner": owner, "previous_owner": previous},
                         actor=actor, conn=s.connection())
        return _view(row), previous


def tokens(*, include_revoked: bool = True) -> list[Token]:
    q = select(ApiToken).order_by(ApiToken.created_at)
    if not include_revoked:
        q = q.where(ApiToken.revoked_at.is_(None))
    with session() as s:
        return [_view(r) for r in s.scalars(q)]


def active_count() -> int:
    return len(tokens(include_revoked=False))


def authenticate(secret: str) -> Token | None:
    """The live token with this secret, or None (unknown, malformed or revoked). Records when it was last used."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    digest = _hash(secret)
    with session() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.secret_hash == digest))
        if row is None or not hmac.compare_digest(row.secret_hash, digest) or row.revoked_at is not None:
            return None
        now = utcnow()
        # At most once a minute: a write per request would make every read a write (and, on SQLite, contend
        # with the workers' writes); `opsq api token list` needs to say "in use", not the exact second.
        if row.last_used_at is None or (now - as_utc(row.last_used_at)).total_seconds() >= LAST_USED_EVERY_S:
            row.last_used_at = now
        return _view(row)


def person_of(actor: str, s: Session | None = None) -> str:
    """The person behind an actor: the owner of the token when the actor is `api:<name>` of a token that has one
    (revoked or not: who submitted stays who submitted), else the actor itself (a Slack approver's or a CLI user's
    name, or a token no person owns). `s`: read in that session (a caller's transaction), else in one of its own."""
    if not actor.startswith(ACTOR_PREFIX):
        return actor
    query = select(ApiToken.owner).where(ApiToken.name == actor.removeprefix(ACTOR_PREFIX))
    if s is not None:
        return s.scalar(query) or actor
    with session() as own:
        return own.scalar(query) or actor


def own_action(action_id: str, token_name: str) -> None:
    """Record that this token submitted this action (a deduplicated submit's first owner stays)."""
    try:
        with session() as s:
            s.execute(insert(ApiAction).values(action_id=action_id, token_name=token_name, created_at=utcnow()))
    except IntegrityError:
        pass


def action_owner(action_id: str) -> str | None:
    with session() as s:
        return s.scalar(select(ApiAction.token_name).where(ApiAction.action_id == action_id))


def owned_actions_query(token_name: str) -> Any:
    """The ids of the actions this token submitted, as a subquery (for workers.store.actions.list_recent)."""
    return select(ApiAction.action_id).where(ApiAction.token_name == token_name)


__all__ = ["ACTOR_PREFIX", "ROLES", "Token", "action_owner", "active_count", "authenticate", "create", "own_action",
           "owned_actions_query", "person_of", "revoke", "set_owner", "tokens"]
