"""Makes sure the processes a command starts can reach a broker (the embedded Redis by default)."""

from __future__ import annotations

import os

from workers.dev import embedded_redis
from workers.settings import reload_settings


def ensure_broker() -> tuple[str, embedded_redis.EmbeddedRedis | None]:
    """With OPSQ_REDIS_URL set, use it. Otherwise reuse or start the embedded Redis, and export its URL
    so every child process (worker pool, subprocesses) uses the same one."""
    settings = reload_settings()
    if settings.redis_url:
        return settings.redis_url, None
    url, owned = embedded_redis.ensure(settings.home)
    os.environ["OPSQ_REDIS_URL"] = url
    reload_settings()
    return url, owned
