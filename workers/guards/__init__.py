"""The guards around every platform call: circuit breaker, idempotency, global rate limit.

Like Dramatiq's middleware, a guard is a small pair of hooks around one attempt: `admit` before the
platform is called and `settle` after. The Redis guard (workers.guards.redis_guard) does each in one
Redis round trip; `PassThrough` admits everything (OPSQ_GUARDS_ENABLED=false).
"""

from __future__ import annotations

import os

from workers.guards.base import Admission, Attempt, Guard, Outcome, PassThrough, new_token
from workers.guards.redis_guard import NotReplicated, RedisGuard
from workers.settings import get_settings

__all__ = ["Admission", "Attempt", "Guard", "NotReplicated", "Outcome", "PassThrough", "get_guard", "new_token",
           "reset_guard"]

_guard: tuple[int, Guard] | None = None


def get_guard() -> Guard:
    global _guard
    if _guard is None or _guard[0] != os.getpid():
        settings = get_settings()
        if settings.guards_enabled:
            guard: Guard = RedisGuard(settings)
        else:
            guard = PassThrough()
        _guard = (os.getpid(), guard)
    return _guard[1]


def reset_guard() -> None:
    global _guard
    _guard = None
