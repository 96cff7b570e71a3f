"""The audit trail: who did what, when, to what. Append-only and hash-chained.

Each entry's hash covers the previous entry's hash and its own fields, so changing or deleting any
entry breaks every hash after it; `verify` names the first entry that no longer fits. Appends first
lock the one-row audit_head table, so entries written at the same time from many processes still form
a single chain; the ids are given under that lock, so the chain's order is the id order.

Submits are too frequent to lock the head each time (it serialised every submitter and, on PostgreSQL,
cost more than the rest of the submit): `defer` writes the entry to audit_pending in the submit's own
transaction, and `seal` chains what is pending in one locked batch. Beat seals every 30 s (the
`seal_audit` job), and every read of the trail (`entries`, `verify`, a backup) and every `append` seals
first, so a reader never sees a pending entry missing, and an entry appended is chained after every
submit committed before it. (Among themselves, submits are chained in the order a seal finds them
committed.) Until it is sealed, a pending entry is covered by no hash: that window is the price of a
cheap submit.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text, update

from workers.redaction import redact
from workers.store.db import get_engine
from workers.store.models import AuditEntry, AuditHead, AuditPending, as_utc, table_of, utcnow

GENESIS = "0" * 64
_LOG = table_of(AuditEntry)
_HEAD = table_of(AuditHead)
_PENDING = table_of(AuditPending)
_DEFER = insert(_PENDING)  # built once: it is on the submit path
SEAL_BATCH = 5000


def default_actor() -> str:
    """OPSQ_ACTOR (a service's name), else the OS user."""
    return os.environ.get("OPSQ_ACTOR") or _os_user()


@functools.cache
def _os_user() -> str:
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
    """Record one operation, chained at once. Pass `conn` to make the entry part of the caller's
    transaction (it then commits or rolls back with the change it records)."""
    if conn is None:
        with get_engine().begin() as own:
            _append(own, action, target, detail, actor)
    else:
        _append(conn, action, target, detail, actor)


def pending_entry(action: str, target: str | None, detail: dict[str, Any] | None, *,
                  actor: str | None) -> dict[str, Any]:
    """An audit_pending row, for `defer` or for a caller that writes it in a statement of its own (the
    submit on PostgreSQL: record and entry in one INSERT)."""
    who, target, clean = _fields(target, detail, actor)
    return {"at": utcnow(), "actor": who, "action": action, "target": target, "detail": clean}


def defer(conn: Connection, entry: dict[str, Any]) -> None:
    """Record one operation (a `pending_entry`) in the caller's transaction without taking the chain's
    lock: one INSERT into audit_pending, chained by the next `seal`. For operations as frequent as
    submits."""
    conn.execute(_DEFER, entry)


def seal() -> int:
    """Chain every pending entry; returns how many. Safe to run from many processes at once."""
    with get_engine().begin() as conn:
        head = _lock_head(conn)
        last_id, last_hash, n = _seal_locked(conn, head)
        if n:
            conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(last_id=last_id, last_hash=last_hash))
    return n


def _fields(target: str | None, detail: dict[str, Any] | None, actor: str | None) -> tuple[str, str | None, Any]:
    if target is not None and len(target) > TARGET_MAX:
        target = target[:TARGET_MAX - 3] + "..."
    return actor or default_actor(), target, redact(detail or {}, urls=True)


def _lock_head(conn: Connection) -> tuple[int, str]:
    """Takes the chain's lock and returns (last id, last hash). A head row deleted by hand is put back
    at GENESIS after the newest id: verify() then reports the break at the first new entry."""
    if conn.dialect.name == "postgresql":
        head = conn.execute(select(_HEAD.c.last_id, _HEAD.c.last_hash).where(_HEAD.c.id == 1)
                            .with_for_update()).first()
    else:
        conn.execute(text("UPDATE audit_head SET id = id WHERE id = 1"))  # SQLite: take the write lock first
        head = conn.execute(select(_HEAD.c.last_id, _HEAD.c.last_hash).where(_HEAD.c.id == 1)).first()
    if head is not None:
        return int(head.last_id), str(head.last_hash)
    newest = int(conn.execute(select(func.coalesce(func.max(_LOG.c.id), 0))).scalar() or 0)
    conn.execute(insert(_HEAD).values(id=1, last_id=newest, last_hash=GENESIS))
    return _lock_head(conn)


def _seal_locked(conn: Connection, head: tuple[int, str]) -> tuple[int, str, int]:
    """Under the head lock: moves every pending entry onto the chain, oldest first, SEAL_BATCH at a
    time. Returns the new (last id, last hash) and how many were moved."""
    last_id, last_hash = head
    moved = 0
    while True:
        rows = conn.execute(select(_PENDING).order_by(_PENDING.c.id).limit(SEAL_BATCH)).all()
        if not rows:
            return last_id, last_hash, moved
        chained = []
        for row in rows:
            last_id += 1
            new_hash = digest(last_hash, row.at, row.actor, row.action, row.target, row.detail)
            chained.append({"id": last_id, "at": row.at, "actor": row.actor, "action": row.action,
                            "target": row.target, "detail": row.detail, "prev_hash": last_hash, "hash": new_hash})
            last_hash = new_hash
        conn.execute(insert(_LOG), chained)
        # Exactly the rows read: on PostgreSQL a submit that took a lower id but committed after the read
        # above must stay pending for the next seal, not be deleted unchained.
        sealed = [row.id for row in rows]
        for i in range(0, len(sealed), 500):
            conn.execute(delete(_PENDING).where(_PENDING.c.id.in_(sealed[i:i + 500])))
        moved += len(rows)


def _append(conn: Connection, action: str, target: str | None, detail: dict[str, Any] | None,
            actor: str | None) -> None:
    # Pending entries first: an entry is chained after every submit committed before it.
    last_id, last_hash, _ = _seal_locked(conn, _lock_head(conn))
    who, target, clean = _fields(target, detail, actor)
    at = utcnow()
    new_hash = digest(last_hash, at, who, action, target, clean)
    conn.execute(insert(_LOG).values(id=last_id + 1, at=at, actor=who, action=action, target=target, detail=clean,
                                     prev_hash=last_hash, hash=new_hash))
    conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(last_id=last_id + 1, last_hash=new_hash))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verify() -> Verdict:
    seal()
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
    seal()
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
