"""The audit trail: who did what, when, to what. Append-only and hash-chained.

Each entry's hash covers the previous entry's hash and its own fields, so changing or deleting any
entry breaks every hash after it; `verify` names the first entry that no longer fits. Appends first
lock the one-row audit_head table, so entries written at the same time from many processes still form
a single chain; the ids are given under that lock, so the chain's order is the id order.

Submits are too frequent to lock the head each time (it serialised every submitter and, on PostgreSQL,
cost more than the rest of the submit): `defer` writes the entry to audit_pending in the submit's own
transaction, and `seal` chains what is pending in one locked batch. Beat seals every 30 s (the
`seal_audit` job), a backup and every `append` seal first, so an entry appended is chained after every
submit committed before it. (Among themselves, submits are chained in the order a seal finds them
committed.) Until it is sealed, a pending entry is covered by no hash: that window is the price of a
cheap submit.

Reading the trail writes nothing (`entries`, `verify`): a reader may be looking at a damaged copy kept
for an investigation, and sealing into it would change the evidence. `entries` shows the pending entries
after the chained ones, marked `pending`; `verify` checks the chain and counts what is pending.

What is audited when: an entry for exactly the changes that happened. A database change writes its entry
in its own transaction (`append(conn=...)`, `defer`). A change elsewhere (Redis: a queue paused, a breaker
forced, a key cleared) goes through `audited_change`: the database is asked first (down: nothing is
changed), then the change, then its entry, retried; an entry that still cannot be written undoes the
change, and the operator is told in one line. A submit the broker refused withdraws its pending entry
(`withdraw_pending`).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from workers.errors import OpsqError
from workers.redaction import redact
from workers.store.db import DatabaseError, get_engine
from workers.store.models import AuditEntry, AuditHead, AuditPending, as_utc, table_of, utcnow

GENESIS = "0" * 64
_LOG = table_of(AuditEntry)
_HEAD = table_of(AuditHead)
_PENDING = table_of(AuditPending)
_DEFER = insert(_PENDING)  # built once: it is on the submit path
SEAL_BATCH = 5000
T = TypeVar("T")
#: Pauses before the audit entry of a change already made is written again (then the change is undone).
RETRY_DELAYS_S = (0.2, 1.0)


class AuditUnavailable(OpsqError):
    """A change was refused or undone because its audit entry could not be written."""


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


def withdraw_pending(conn: Connection, action: str, target: str, reason: str, *,
                     actor: str | None = None) -> bool:
    """In the caller's transaction (the one that undoes the change): remove the pending entry of a change
    that did not happen after all (a submit the broker refused). If a seal chained it meanwhile, the chain
    cannot be edited: a `<action>_withdrawn` entry saying why is appended instead. True if it was
    still pending."""
    gone = conn.execute(delete(_PENDING).where(_PENDING.c.action == action, _PENDING.c.target == target))
    if gone.rowcount:
        return True
    sealed = conn.execute(select(_LOG.c.actor).where(_LOG.c.action == action, _LOG.c.target == target)
                          .order_by(_LOG.c.id.desc()).limit(1)).first()
    if sealed is not None:
        _append(conn, f"{action}_withdrawn", target, {"reason": reason}, actor or sealed.actor)
    return False


def _cause(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split()) or type(exc).__name__


def audited_change(change: Callable[[], T], entry: Callable[[T], tuple[str, str | None, dict[str, Any]]],
                   undo: Callable[[T], None], *, subject: str, verb: str, actor: str | None = None,
                   with_entry: Callable[[Connection, T], None] | None = None) -> T:
    """A change outside the database (Redis) with its audit entry: never one without the other.

    The database is asked first: down, nothing is changed. Then `change()`, then its entry (`entry(result)`
    gives action, target, detail), written at once and retried RETRY_DELAYS_S; an entry that still cannot be
    written makes `undo(result)` put things back. `subject` and `verb` start the one line the operator
    reads ("queue slack" "paused": "queue slack not paused: ..."). `with_entry(conn, result)` is the
    database side of the change, written in the entry's transaction (a queue clear fails what it dropped).

    The chain's lock is not held across the change: on SQLite it is the database's write lock, and the
    workers' writes would wait for the change's broadcasts."""
    refused = f"{subject} not {verb}"
    try:
        with get_engine().connect() as conn:
            conn.execute(select(_HEAD.c.last_id).limit(1)).all()
    except (SQLAlchemyError, DatabaseError, OSError) as exc:
        raise AuditUnavailable(f"{refused}: the audit trail cannot be written ({_cause(exc)}); nothing was "
                               "changed") from None
    result = change()
    action, target, detail = entry(result)
    error: BaseException | None = None
    for delay in (0.0, *RETRY_DELAYS_S):
        time.sleep(delay)
        try:
            with get_engine().begin() as conn:
                if with_entry is not None:
                    with_entry(conn, result)
                _append(conn, action, target, detail, actor)
            return result
        except (SQLAlchemyError, DatabaseError, OSError) as exc:
            error = exc
    assert error is not None
    try:
        undo(result)
    except Exception as exc:
        raise AuditUnavailable(f"{subject} {verb} but NOT in the audit trail ({_cause(error)}), "
                               f"and undoing it failed ({_cause(exc)}): check its state and record it by "
                               "hand") from None
    raise AuditUnavailable(f"{refused}: the audit trail could not be written ({_cause(error)}); the change was "
                           "undone") from None


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
    #: Entries written but not chained yet (submits awaiting the next seal): no hash covers them.
    pending: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verify() -> Verdict:
    """Checks the chain; writes nothing (it may be a damaged copy being examined)."""
    with get_engine().connect() as conn:
        pending = int(conn.execute(select(func.count()).select_from(_PENDING)).scalar() or 0)
        prev, checked, last_id = GENESIS, 0, 0
        for row in conn.execute(select(_LOG).order_by(_LOG.c.id)).yield_per(1000):
            if row.prev_hash != prev:
                return Verdict(False, checked, row.id, "the entry before it was changed or deleted", pending)
            if digest(row.prev_hash, row.at, row.actor, row.action, row.target, row.detail) != row.hash:
                return Verdict(False, checked, row.id, "its contents do not match its hash (edited)", pending)
            prev, last_id = row.hash, row.id
            checked += 1
        head = conn.execute(select(_HEAD.c.last_id, _HEAD.c.last_hash).where(_HEAD.c.id == 1)).first()
        if head is None:  # never written to (a fresh database), or the head row deleted by hand
            if checked:
                return Verdict(False, checked, last_id, "the chain's head row is missing", pending)
            return Verdict(True, 0, pending=pending)
        if head.last_hash != prev:
            return Verdict(False, checked, last_id + 1 if head.last_id > last_id else head.last_id,
                           f"entries after id {last_id} were deleted (the chain's head is id {head.last_id})",
                           pending)
    return Verdict(True, checked, pending=pending)


def entries(*, since: datetime | None = None, action: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest `limit` entries, oldest first: the chained ones, then those still pending (marked
    `pending`, no id yet: the next seal chains them after every chained one). Writes nothing."""
    chained = select(_LOG).order_by(_LOG.c.id.desc()).limit(limit)
    waiting = select(_PENDING).order_by(_PENDING.c.id.desc()).limit(limit)
    if since is not None:
        chained, waiting = chained.where(_LOG.c.at >= since), waiting.where(_PENDING.c.at >= since)
    if action:
        chained, waiting = chained.where(_LOG.c.action == action), waiting.where(_PENDING.c.action == action)
    with get_engine().connect() as conn:
        pending = [dict(r._mapping) | {"id": None, "prev_hash": None, "hash": None, "pending": True}
                   for r in conn.execute(waiting)]
        rows = [dict(r._mapping) | {"pending": False} for r in conn.execute(chained.limit(limit - len(pending)))] \
            if len(pending) < limit else []
    for r in (*rows, *pending):
        r["at"] = as_utc(r["at"])
    return list(reversed(rows)) + list(reversed(pending))
