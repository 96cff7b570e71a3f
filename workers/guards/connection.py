"""The guards' Redis client: the broker's Redis, one connection pool per process."""

from __future__ import annotations

import os

import redis

from workers.dev.broker_url import resolve_redis_url
from workers.settings import Settings, get_settings

_client: tuple[int, str, redis.Redis] | None = None


def as_text(value: bytes | str) -> str:
    """A reply from the guards' client (bytes: it does not decode responses) as text. redis-py types
    replies as bytes or str, whichever the client was built with."""
    return value.decode() if isinstance(value, bytes) else value


def server_time(client: redis.Redis) -> float:
    """Redis' clock, the one the guards' scripts use: comparing against it, not a worker's clock,
    keeps leases and breaker timings consistent across hosts."""
    sec, usec = client.time()
    return sec + usec / 1_000_000


def guard_redis(settings: Settings | None = None) -> redis.Redis:
    global _client
    url = resolve_redis_url(settings or get_settings())
    if _client is None or _client[0] != os.getpid() or _client[1] != url:
        _client = (os.getpid(), url, redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                                           health_check_interval=30))
    return _client[2]
