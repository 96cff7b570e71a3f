"""Waiting for outcomes: pushed by Redis the moment an attempt settles, with the store as the fallback.

Why it exists: a waiter that polls the database waits for the poll interval and for the worker's
write-behind of success records (workers.store.outcomes), ~130 ms for a 3 ms action. The success is in
Redis (the execution record) the moment the attempt settles, and the settle script publishes it on the
action's outcome channel (workers.guards.keys.outcome_channel) in the same round trip; a final failure is
published by the worker once the database has it (`notify`). A waiter subscribes first, then reads the
truth (the store, overlaid with the execution record: `current_status`), then blocks on the channel. A
notification it missed (a dropped pub/sub connection, a path that does not publish: the stuck detector,
an operator's purge, guards turned off) costs it one fallback poll, at most FALLBACK_MAX_S.

What a waiter returns is `current_status`: a success can be in Redis before the database row says so (the
write-behind commits within OPSQ_OUTCOME_FLUSH_MS); the record then reads `succeeded` with the result and
times from the execution record, as `opsq action status` shows it.

One pub/sub connection per thread is kept and reused (redis-py closes the socket of a PubSub it resets,
and a new connection per wait costs more than the wait): channels are subscribed for a wait and
unsubscribed after it, and messages for other channels are ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import redis
from redis.client import PubSub
from sqlalchemy import Connection

from workers.guards import keys
from workers.guards.base import RunState
from workers.guards.connection import as_text, guard_redis
from workers.guards.execution import live_state
from workers.settings import get_settings
from workers.status import OPEN_ACTION_STATUSES, ActionStatus
from workers.store import actions as store
from workers.store.actions import ActionView

log = logging.getLogger("opsq.waiting")

T = TypeVar("T")

#: A waiter re-reads the truth at least this often, notification or not (its first re-read comes after
#: FALLBACK_MIN_S, then the interval doubles up to FALLBACK_MAX_S).
FALLBACK_MIN_S = 0.1
FALLBACK_MAX_S = 1.0
#: Channels per SUBSCRIBE command when waiting for many actions.
SUBSCRIBE_BATCH = 500
#: How many of the oldest open actions a fallback poll reads from the store (actions finish roughly in
#: the order they were submitted; the notifications carry the rest).
FALLBACK_WINDOW = 64


def notify(action_id: str) -> None:
    """Tells whoever waits for `action_id` that its outcome is final in the store."""
    publish(keys.outcome_channel(action_id), "final")


def publish(channel: str, message: str) -> None:
    """Best effort: a waiter that misses it finds the change on its next fallback poll, and the change it
    announces is already committed, so a failure here must not fail the caller."""
    try:
        guard_redis().publish(channel, message)
    except redis.RedisError as exc:
        log.debug("could not publish on %s: %s", channel, exc)


def current_status(action_id: str) -> ActionView:
    """The stored record, overlaid with the execution record in Redis: `running` from the live lease (the
    worker writes no running row: a commit per action on the hot path), `succeeded` with its result from a
    settled success the write-behind has not committed yet."""
    return overlay(store.get(action_id))


def overlay(view: ActionView) -> ActionView:
    """`view` (from the store) with what the execution record says that the store does not say yet."""
    if view.status not in OPEN_ACTION_STATUSES or not get_settings().guards_enabled:
        return view
    live = live_state(view.id)
    if not live:
        return view
    state = live.get("state")
    if state == RunState.RUNNING:
        return dataclasses.replace(view, status=ActionStatus.RUNNING,
                                   attempts=int(str(live.get("attempt", view.attempts))),
                                   started_at=view.started_at or live.get("started"))
    if state == RunState.DONE:
        try:
            result = json.loads(str(live.get("result") or "{}"))
        except ValueError:
            return view
        return dataclasses.replace(view, status=ActionStatus.SUCCEEDED, result=result, error=None, error_kind=None,
                                   attempts=int(str(live.get("attempt", view.attempts))),
                                   started_at=live.get("started") or view.started_at,
                                   finished_at=live.get("finished") or view.finished_at,
                                   next_attempt_at=None)
    # A failure is read from the store once it is final there: whether it went to the dead letters is
    # decided when the store records it.
    return view


class _Listener:
    """This thread's pub/sub connection, kept across waits."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.client = guard_redis()
        self.pubsub: PubSub = self.client.pubsub()

    def subscribe(self, channels: list[str]) -> None:
        """Subscribes and waits until Redis confirms: a success published before the confirmation would be
        missed, and the caller reads the truth only after this returns."""
        waiting = set(channels)
        for i in range(0, len(channels), SUBSCRIBE_BATCH):
            self.pubsub.subscribe(*channels[i:i + SUBSCRIBE_BATCH])
        deadline = time.monotonic() + 5.0
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise redis.TimeoutError("no confirmation of SUBSCRIBE from Redis")
            msg = self.pubsub.get_message(timeout=left)
            if msg and msg["type"] == "subscribe":
                waiting.discard(as_text(msg["channel"]))

    def unsubscribe(self, channels: list[str]) -> None:
        for i in range(0, len(channels), SUBSCRIBE_BATCH):
            self.pubsub.unsubscribe(*channels[i:i + SUBSCRIBE_BATCH])

    def notified(self, timeout: float) -> list[tuple[str, str]]:
        """(channel, message) published within `timeout` (blocks until the first, then takes what else is read)."""
        out: list[tuple[str, str]] = []
        msg = self.pubsub.get_message(timeout=max(timeout, 0.0))
        while msg is not None:
            if msg["type"] == "message":
                out.append((as_text(msg["channel"]), as_text(msg["data"])))
            msg = self.pubsub.get_message(timeout=0.0)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            self.pubsub.close()


_local = threading.local()


@contextmanager
def _listening(channels: list[str]) -> Iterator[_Listener | None]:
    """This thread's listener subscribed to `channels`; None when Redis cannot be reached for it (the
    waiter then polls)."""
    listener: _Listener | None = getattr(_local, "listener", None)
    if listener is not None and (listener.pid != os.getpid() or listener.client is not guard_redis()):
        _local.listener = listener = None  # forked, or the settings changed: not this process' connection
    try:
        if listener is None:
            listener = _local.listener = _Listener()
        listener.subscribe(channels)
    except redis.RedisError as exc:
        log.debug("waiting by polling: cannot subscribe (%s)", exc)
        _drop(listener)
        yield None
        return
    try:
        yield listener
    finally:
        try:
            listener.unsubscribe(channels)
        except redis.RedisError:
            _drop(listener)


def _drop(listener: _Listener | None) -> None:
    if listener is not None:
        listener.close()
    if getattr(_local, "listener", None) is listener:
        _local.listener = None


def _block(listener: _Listener | None, timeout: float) -> list[tuple[str, str]]:
    """(channel, message) published within `timeout`; sleeps it out when there is no listener (or it broke)."""
    if listener is not None:
        try:
            return listener.notified(timeout)
        except (redis.RedisError, OSError, ValueError) as exc:
            # Redis went away under the subscription: poll from here on; the next wait subscribes again.
            log.debug("waiting by polling: the subscription broke (%s)", exc)
            _drop(listener)
    time.sleep(max(timeout, 0.0))
    return []


def wait_one(action_id: str, timeout: float) -> ActionView:
    """Blocks until the action is final (succeeded in Redis, or final in the store); TimeoutError if not
    within `timeout`."""
    stored: ActionView | None = None


    def read(note: str | None) -> ActionView:
        nonlocal stored
        # A published success is in the execution record: overlay the record read before on it (one Redis
        # round trip), rather than ask the database again for a row the write-behind has not written yet.
        if stored is None or note != RunState.DONE:
            # One statement, no session or transaction; the connection goes back to the pool at once (a
            # waiter holding one for its whole wait would starve a service's other threads).
            with store.polling_connection() as conn:
                stored = store.read(action_id, conn)
        try:
            return overlay(stored)
        except redis.RedisError:
            return stored  # Redis away: the store still says what it knows

    return wait_until(keys.outcome_channel(action_id), read, lambda view: view.done, timeout,
                      lambda view: f"action {action_id} still {view.status} after {timeout:g}s")


def wait_until(channel: str, read: Callable[[str | None], T], done: Callable[[T], bool], timeout: float,
               timed_out: Callable[[T], str]) -> T:
    """Reads with `read` until `done` says yes, again each time `channel` publishes (`read` gets what was
    published; None on the first reads and a fallback poll); TimeoutError(timed_out(last read)) after `timeout`.
    Read once before subscribing (what is done already costs no subscription), then again once subscribed,
    so a publish that follows the state it announces is never missed."""
    deadline = time.monotonic() + timeout
    value = read(None)
    if done(value):  # already there (a handle waited for long after its submit): no subscription to make
        return value
    with _listening([channel]) as listener:
        fallback = FALLBACK_MIN_S
        note: str | None = None
        while True:
            value = read(note)
            if done(value):
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(timed_out(value))
            notes = [data for ch, data in _block(listener if _alive(listener) else None, min(left, fallback))
                     if ch == channel]
            note = notes[-1] if notes else None
            if note is None:
                fallback = min(fallback * 2, FALLBACK_MAX_S)


def _alive(listener: _Listener | None) -> bool:
    return listener is not None and getattr(_local, "listener", None) is listener


def wait_many(action_ids: Iterable[str], timeout: float) -> None:
    """Blocks until every action is final; TimeoutError naming how many are open if not within `timeout`."""
    pending = list(dict.fromkeys(action_ids))
    if not pending:
        return
    deadline = time.monotonic() + timeout
    with store.polling_connection() as conn:
        pending = _still_open(pending, conn)  # what is done already costs no subscription
        if not pending:
            return
        by_channel = {keys.outcome_channel(a): a for a in pending}
        with _listening(list(by_channel)) as listener:
            _wait_open(pending, by_channel, listener, conn, deadline, timeout)


def _wait_open(pending: list[str], by_channel: dict[str, str], listener: _Listener | None, conn: Connection,
               deadline: float, timeout: float) -> None:
    open_ = set(_still_open(pending, conn))  # again, now that a publish cannot be missed
    fallback = FALLBACK_MIN_S
    next_poll = time.monotonic() + fallback
    while open_:
        now = time.monotonic()
        if now >= deadline:
            left = _still_open([a for a in pending if a in open_], conn)  # the exact count, once
            if not left:
                return
            raise TimeoutError(f"{len(left)} action(s) still open after {timeout:g}s (first: {left[0]})")
        if now >= next_poll:
            window = [a for a in pending if a in open_][:FALLBACK_WINDOW]
            open_ -= set(window) - set(_still_open(window, conn))
            fallback = min(fallback * 2, FALLBACK_MAX_S)
            next_poll = now + fallback
            continue
        for channel, _ in _block(listener if _alive(listener) else None, min(deadline, next_poll) - now):
            # Only final outcomes are published: a message is the outcome.
            action = by_channel.get(channel)
            if action is not None:
                open_.discard(action)


def _still_open(action_ids: list[str], conn: Connection) -> list[str]:
    """Of `action_ids`, those neither succeeded in Redis nor final in the store."""
    if not action_ids:
        return []
    candidates = action_ids
    if get_settings().guards_enabled:
        try:
            pipe = guard_redis().pipeline(transaction=False)
            for a in action_ids:
                pipe.hget(keys.run(a), "state")
            states = pipe.execute()
            candidates = [a for a, s in zip(action_ids, states, strict=True)
                          if s is None or as_text(s) != RunState.DONE]
        except redis.RedisError:
            candidates = action_ids
    if not candidates:
        return []
    return store.not_final(candidates, conn)

