"""Which Redis to use: OPSQ_REDIS_URL, else the embedded Redis another opsqueue process started."""

from __future__ import annotations

from workers.dev import embedded_redis
from workers.errors import ConfigError
from workers.settings import Settings


def resolve_redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    url = embedded_redis.discover(settings.home)
    if url:
        return url
    raise ConfigError(
        "no Redis: set OPSQ_REDIS_URL, or start `opsq worker` (it starts an embedded Redis when none is set)"
    )
