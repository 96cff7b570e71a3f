"""The audit trail: who did what, when, to what. Append-only and hash-chained.

Each entry's hash covers the previous entry's hash and its own fields, so changing or deleting any
entry breaks every hash after it; `verify` names the first entry that no longer fits. Appends first
lock the one-row audit_head table, so entries written at the same time from many processes still form
a single chain.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, text, update

from workers.redaction import redact
from workers.store.db import get_engine
from workers.store.models import AuditEntry, AuditHead, as_utc, utcnow

GENESIS = "0" * 64
_LOG = AuditEntry.__table__
_HEAD = AuditHead.__table__


def default_actor() -> str:
    """OPSQ_ACTOR (a service's name), else the OS user."""
    actor = os.environ.get("OPSQ_ACTOR")
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - containers without a passwd entry
        return f"uid:{os.getuid()}"


TARGET_MAX = 200  # audit_log.target is String(200); PostgreSQL refuses longer values


def digest(prev_hash: str, at: datetime, actor: str, action: str, target: str | None, detail: Any) -> str:
    """`at` is hashed in UTC: PostgreSQL returns it in the reading session's time zone, and the chain must
    verify whatever that is."""
    body = json.dumps([prev_hash, as_utc(at).isoformat(), actor, action, target, detail], sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def append(action: str, target: str | None = None, detail: dict[str, Any] | None = None, *,
           actor: str | None = None, conn: Connection | None = None) -> None:
    """Record one operation. Pass `conn` to make the entry part of the caller's transaction (it then
    commits or rolls back with the change it records)."""
    if conn is None:
        with get_engine().begin() as own:
            _append(own, action, target, detail, actor)
    else:
        _append(conn, action, target, detail, actor)


def _lock_head(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return conn.execute(select(_HEAD.c.last_id, _HEAD.c.last_hash).where(_HEAD.c.id == 1).with_for_update()).first()
    conn.execute(text("UPDATE audit_head SET id = id WHERE id = 1"))  # SQLite: take the write lock first
    return conn.execute(select(_HEAD.c.last_id, _HEAD.c.last_hash).where(_HEAD.c.id == 1)).first()


def _append(conn: Connection, action: str, target: str | None, detail: dict[str, Any] | None,
            actor: str | None) -> None:
    head = _lock_head(conn)
    if head is None:
        # The head row is gone (deleted by hand). Start again from GENESIS: if entries exist, verify()
        # reports the break at the first new entry instead of this hiding it.
        conn.execute(insert(_HEAD).values(id=1, last_id=0, last_hash=GENESIS))
        head = _lock_head(conn)
    at = utcnow()
    who = actor or default_actor()
    clean = redact(detail or {}, urls=True)
    if target is not None and len(target) > TARGET_MAX:
        target = target[:TARGET_MAX - 3] + "..."
    new_hash = digest(head.last_hash, at, who, action, target, clean)
    new_id = conn.execute(insert(_LOG).values(at=at, actor=who, action=action, target=target, detail=clean,
                                              prev_hash=head.last_hash, hash=new_hash)).inserted_primary_key[0]
    conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(last_id=new_id, last_hash=new_hash))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verify() -> Verdict:
    with get_engine().connect() as conn:
        prev, checked, last_id = GENESIS, 0, 0
        for row in conn.execute(select(_LOG).order_by(_LOG.c.id)).yield_per(1000):
            if row.prev_hash != prev:
                return Verdict(False, checked, row.id, "the entry before it was changed or deleted")
            if digest(row.prev_hash, row.at, row.actor, row.action, row.target, row.detail) != row.hash:
                return Verdict(False, checked, row.id, "its contents do not match its hash (edited)")
            prev, last_id = row.hash, row.id
            checked += 1
        head = conn.execute(select(_HEAD.c.last_id, _HEAD.c.last_hash).where(_HEAD.c.id == 1)).one()
        if head.last_hash != prev:
            return Verdict(False, checked, last_id + 1 if head.last_id > last_id else head.last_id,
                           f"entries after id {last_id} were deleted (the chain's head is id {head.last_id})")
    return Verdict(True, checked)


def entries(*, since: datetime | None = None, action: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    q = select(_LOG).order_by(_LOG.c.id.desc()).limit(limit)
    if since is not None:
        q = q.where(_LOG.c.at >= since)
    if action:
        q = q.where(_LOG.c.action == action)
    with get_engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["at"] = as_utc(r["at"])
    return list(reversed(rows))
