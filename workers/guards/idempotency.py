"""Idempotency keys at submit time: one key, one action, for `idempotency_ttl_s`.

(The execution side — a redelivered message never calling the platform twice — is the run record
that the admit/settle scripts keep per action id.)"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from workers.guards import keys, scripts
from workers.guards.connection import as_text, guard_redis
from workers.guards.execution import live_state
from workers.store import audit


def derive_key(platform: str, action: str, params: dict[str, Any]) -> str:
    """For callers with no key of their own: the same platform, action and params give the same key."""
    canonical = json.dumps([platform, action, params], sort_keys=True, separators=(",", ":"), default=str)
    return "auto:" + hashlib.sha256(canonical.encode()).hexdigest()


def claim(key: str, action_id: str, ttl_s: int, client: redis.Redis | None = None) -> str | None:
    """Bind `key` to `action_id` unless it is bound already; returns the first action's id if it was."""
    r = client or guard_redis()
    existing = r.register_script(scripts.CLAIM_KEY)(keys=[keys.idempotency(key)], args=[action_id, ttl_s])
    if existing is None:
        return None
    return existing.decode() if isinstance(existing, bytes) else str(existing)


def release(key: str, action_id: str, client: redis.Redis | None = None) -> None:
    r = client or guard_redis()
    r.register_script(scripts.RELEASE_KEY)(keys=[keys.idempotency(key)], args=[action_id])


def show(key: str, client: redis.Redis | None = None) -> dict[str, Any] | None:
    r = client or guard_redis()
    action_id = r.get(keys.idempotency(key))
    if action_id is None:
        return None
    aid = as_text(action_id)
    record = live_state(aid, r)
    return {"key": key, "action_id": aid, "ttl_s": r.ttl(keys.idempotency(key)), "execution": record}


def clear(key: str, client: redis.Redis | None = None, actor: str | None = None) -> str | None:
    """Forget the key, so a new submit with it creates a new action. Returns the action it named. Audited,
    or not done (workers.store.audit.audited_change): the key is put back, with its TTL, if its entry
    cannot be written."""
    r = client or guard_redis()
    name = keys.idempotency(key)
    if r.get(name) is None:  # nothing to clear: nothing to record
        return None

    def change() -> tuple[bytes | None, int]:
        pipe = r.pipeline()
        pipe.get(name)
        pipe.pttl(name)
        pipe.delete(name)
        action_id, pttl, _ = pipe.execute()
        return action_id, int(pttl)

    def undo(done: tuple[bytes | None, int]) -> None:
        action_id, pttl = done
        if action_id is not None:  # NX: a submit that claimed the key meanwhile keeps it
            r.set(name, action_id, px=pttl if pttl > 0 else None, nx=True)

    def entry(done: tuple[bytes | None, int]) -> tuple[str, str, dict[str, Any]]:
        return "idempotency_clear", f"key:{key}", {"action_id": as_text(done[0]) if done[0] else None}

    action_id, _ = audit.audited_change(change, entry, undo, subject=f"idempotency key {key!r}", verb="cleared",
                                        actor=actor)
    return as_text(action_id) if action_id else None
