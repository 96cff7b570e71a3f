"""Reading an action's execution record in Redis (the running lease, or its stored outcome)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from workers.guards import keys
from workers.guards.connection import as_text, guard_redis


def live_state(action_id: str, client: redis.Redis | None = None) -> dict[str, Any] | None:
    raw = (client or guard_redis()).hgetall(keys.run(action_id))
    if not raw:
        return None
    record: dict[str, Any] = {as_text(k): as_text(v) for k, v in raw.items()}
    for field in ("started", "finished", "lease_until"):
        if field in record:
            record[field] = datetime.fromtimestamp(float(record[field]), UTC)
    return record
