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
    """Forget the key, so a new submit with it creates a new action. Returns the action it named."""
    r = client or guard_redis()
    pipe = r.pipeline()
    pipe.get(keys.idempotency(key))
    pipe.delete(keys.idempotency(key))
    action_id, _ = pipe.execute()
    if action_id:
        audit.append("idempotency_clear", f"key:{key}", {"action_id": action_id.decode()}, actor=actor)
    return action_id.decode() if action_id else None
