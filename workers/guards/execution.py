"""Reading an action's execution record in Redis (the running lease, or its stored outcome)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from workers.guards import keys
from workers.guards.connection import as_text, guard_redis


def live_state(action_id: str, client: redis.Redis | None = None) -> dict[str, Any] | None:
    return _record((client or guard_redis()).hgetall(keys.run(action_id)))


def live_states(action_ids: list[str], client: redis.Redis | None = None) -> list[dict[str, Any] | None]:
    """live_state() of each, in one round trip (a pipeline)."""
    pipe = (client or guard_redis()).pipeline(transaction=False)
    for action_id in action_ids:
        pipe.hgetall(keys.run(action_id))
    return [_record(raw) for raw in pipe.execute()]


def _record(raw: dict[Any, Any]) -> dict[str, Any] | None:
    if not raw:
        return None
    record: dict[str, Any] = {as_text(k): as_text(v) for k, v in raw.items()}
    for field in ("started", "finished", "lease_until"):
        if field in record:
            record[field] = datetime.fromtimestamp(float(record[field]), UTC)
    return record
