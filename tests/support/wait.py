from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from workers.store import actions as store
from workers.store.actions import ActionView

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float = 0.05) -> T:
    """Poll until fn() is truthy; return its value. Fails with `what` so a timeout says what was missing."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stored(action_ids: list[str], timeout: float = 10.0) -> list[ActionView]:
    """The store's records of `action_ids` once each is final there. A waiter returns as soon as Redis has a
    success (workers.waiting); the worker's write-behind commits the row within OPSQ_OUTCOME_FLUSH_MS."""
    views: list[ActionView] = []

    def read() -> bool:
        views[:] = [store.get(a) for a in action_ids]
        return all(v.done for v in views)

    wait_for(read, timeout=timeout, what=f"the store to record the outcomes of {len(action_ids)} action(s)")
    return views
