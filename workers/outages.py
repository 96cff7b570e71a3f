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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
from celery.exceptions import Reject, Retry
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from workers.errors import ActionFailed
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
        # Through `raise ... from exc` and implicit chaining, but not past `raise ... from None`.
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
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


#: How long an attempt waits in its pool slot for Redis or the database to answer again before it hands its
#: message back: a restart or failover takes seconds, and nothing else can run meanwhile anyway.
OUTAGE_WAIT_S = 20.0


@contextmanager
def hand_back_on_outage(log_extra: Mapping[str, Any]) -> Iterator[None]:
    """Around a task's body: Redis or the database away is not the task's failure. Celery would acknowledge
    the message as failed; here the task waits for the server, then hands the message back to its queue
    (Reject with requeue). What had already happened is in the guards' execution record, so the next
    delivery does only what is left. Any other exception goes through untouched."""
    try:
        yield
    except (Retry, Reject, ActionFailed):
        # ActionFailed: a failure already decided and recorded, whatever it is chained to (an executor's crash).
        raise
    except Exception as exc:
        which = outage_of(exc)
        if which is None:
            raise
        log.warning("%s is unreachable (%s: %s); waiting up to %.0fs, then handing the message back",
                    which, type(exc).__name__, exc, OUTAGE_WAIT_S, extra=dict(log_extra))
        back = wait_until_back(which, OUTAGE_WAIT_S)
        log.warning("handing the message back (%s %s)", which, "answers again" if back else "still away",
                    extra=dict(log_extra))
        raise Reject(f"{which} unreachable", requeue=True) from None
