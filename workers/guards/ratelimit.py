"""Operator view of the global rate limits (the bucket itself lives in the admit script)."""

from __future__ import annotations

from typing import Any

import redis

from workers.guards import keys
from workers.guards.breaker import check_platform
from workers.guards.connection import guard_redis
from workers.settings import get_settings


def status(platform: str, client: redis.Redis | None = None) -> dict[str, Any]:
    r = client or guard_redis()
    limit = get_settings().rate_limit(check_platform(platform))
    pipe = r.pipeline(transaction=False)
    pipe.hmget(keys.rate_bucket(platform), "tokens", "ts")
    pipe.hget(keys.stats(platform), "rate_waits")
    pipe.time()
    (tokens, ts), waits, (sec, usec) = pipe.execute()
    now = float(sec) + usec / 1_000_000
    available: float | None = None
    if limit.rate > 0:
        if tokens is None:
            available = float(limit.burst)
        else:
            available = min(limit.burst, float(tokens) + max(0.0, now - float(ts)) * limit.rate)
    return {"platform": platform, "rate_per_s": limit.rate, "burst": limit.burst,
            "unlimited": limit.rate == 0, "tokens_available": available,
            "waits_total": int(waits or 0)}
