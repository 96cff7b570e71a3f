"""Telling an outage of Redis or the database from a bug, and waiting for one to end.

Why: an attempt whose Redis or database call fails because the server is away (restarting, failing over,
a network blip) has done nothing wrong and lost nothing yet. Celery would treat the exception as the task's
failure and acknowledge the message, and the action would be orphaned until detect_stuck found it. So the
task asks here whether the exception is an outage, waits a little for the server to answer again, and hands
the message back (workers.tasks) instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from workers.guards.connection import guard_redis
from workers.store.db import get_engine

log = logging.getLogger("opsq.action")

REDIS = "Redis"
DATABASE = "the database"


def outage_of(exc: BaseException) -> str | None:
    """REDIS or DATABASE when `exc` says that server could not be reached (or refused for now), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # also through `raise ... from`
        seen.add(id(current))
        if isinstance(current, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError
                      | redis.ReadOnlyError | redis.exceptions.TryAgainError | redis.exceptions.MasterDownError):
            return REDIS
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError):
            return DATABASE
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return DATABASE
        current = current.__cause__ or current.__context__
    return None


def _redis_answers() -> bool:
    return bool(guard_redis().ping())


def _database_answers() -> bool:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))
    return True


PROBES: dict[str, Callable[[], bool]] = {REDIS: _redis_answers, DATABASE: _database_answers}


def wait_until_back(which: str, max_s: float, interval_s: float = 0.5) -> bool:
    """Polls `which` until it answers (True) or `max_s` has passed (False)."""
    deadline = time.monotonic() + max_s
    probe = PROBES[which]
    while True:
        try:
            if probe():
                return True
        except Exception:  # still away
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
