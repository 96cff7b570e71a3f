"""The quarantine: queue items a worker could not deliver (workers.broker_transport), for operators."""

from __future__ import annotations

import json
from typing import Any

import redis

from workers.broker_transport import QUARANTINE_KEY, QUARANTINED_COUNT_KEY
from workers.guards.connection import guard_redis
from workers.store import audit


def entries(limit: int = 100, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """The newest first, each as recorded: queue, reason, size, time, the first bytes (base64)."""
    r = client or guard_redis()
    return [json.loads(raw) for raw in r.lrange(QUARANTINE_KEY, 0, limit - 1)]


def counts(client: redis.Redis | None = None) -> dict[str, int]:
    """How many are kept now, and how many were ever quarantined."""
    r = client or guard_redis()
    pipe = r.pipeline(transaction=False)
    pipe.llen(QUARANTINE_KEY)
    pipe.get(QUARANTINED_COUNT_KEY)
    kept, total = pipe.execute()
    return {"kept": int(kept), "total": int(total or 0)}


def drop(actor: str | None = None, client: redis.Redis | None = None) -> int:
    """Empty the quarantine (what an operator does once the sender is fixed); audited."""
    r = client or guard_redis()
    pipe = r.pipeline(transaction=True)
    pipe.llen(QUARANTINE_KEY)
    pipe.delete(QUARANTINE_KEY)
    dropped = int(pipe.execute()[0])
    audit.append("quarantine_drop", "quarantine", {"dropped": dropped}, actor=actor or audit.default_actor())
    return dropped
