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

One pub/sub connection per process (`_Hub`), read by one daemon thread, is shared by every waiter in it:
channels are subscribed for a wait and unsubscribed after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.client import PubSub
from sqlalchemy import Connection

from workers.dev.broker_url import redis_target
from workers.errors import NotFound
from workers.guards import keys
from workers.guards.base import RunState
from workers.guards.connection import as_text, guard_redis, make_client
from workers.guards.execution import live_state, live_states
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


def current_statuses(action_ids: list[str]) -> list[ActionView]:
    """current_status() of each, in order, in one store read per 500 and one Redis round trip (what wait_all
    returns); NotFound for an unknown id."""
    with store.polling_connection() as conn:
        stored = store.read_many(list(dict.fromkeys(action_ids)), conn)
    for action_id in action_ids:
        if action_id not in stored:
            raise NotFound(f"no action with id {action_id}")
    open_ = [v for v in stored.values() if v.status in OPEN_ACTION_STATUSES]
    if open_ and get_settings().guards_enabled:
        try:
            for view, live in zip(open_, live_states([v.id for v in open_]), strict=True):
                stored[view.id] = _overlaid(view, live)
        except redis.RedisError:
            pass  # Redis away: the store still says what it knows
    return [stored[a] for a in action_ids]


def overlay(view: ActionView) -> ActionView:
    """`view` (from the store) with what the execution record says that the store does not say yet."""
    if view.status not in OPEN_ACTION_STATUSES or not get_settings().guards_enabled:
        return view
    return _overlaid(view, live_state(view.id))


def _overlaid(view: ActionView, live: dict[str, Any] | None) -> ActionView:
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


class _Box:
    """What one waiter has been told: (channel, message), or (None, None) when the subscription broke and
    notifications may have been missed (read the truth again)."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[tuple[str | None, str | None]] = queue.SimpleQueue()

    def take(self, timeout: float) -> list[tuple[str | None, str | None]]:
        """Blocks up to `timeout` for the first, then takes what else is there."""
        try:
            out = [self.inbox.get(timeout=max(timeout, 0.0))]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.inbox.get_nowait())
        return out


#: The hub's own channel, subscribed for its whole life: the connection always exists for its reader.
HUB_CHANNEL = "opsq:waiting:hub"
#: How long a waiter waits for Redis to confirm its SUBSCRIBE before it falls back to polling.
CONFIRM_S = 5.0


def hub_name() -> str:
    """The client name of this process's pub/sub connection in Redis (CLIENT LIST)."""
    return f"opsq-waiting-{os.getpid()}"


class _Hub:
    """This process's one pub/sub connection, read by one daemon thread and shared by every waiter.

    Why not a connection per waiter (or per thread): a service with a thousand threads waiting would hold a
    thousand Redis connections. Each waiter registers a box for its channels; the hub SUBSCRIBEs a channel
    when its first waiter comes and UNSUBSCRIBEs it when its last goes, and the reader hands each message to
    the boxes watching its channel. A waiter returns from `watch` only once Redis has confirmed every
    SUBSCRIBE it needed (Redis answers in order, so counting confirmations per channel is exact), so what it
    reads afterwards cannot miss a publish. When the connection breaks, redis-py reconnects on the next read
    and subscribes again to every channel; the boxes are told (None, None) so their waiters read the truth
    again rather than wait for their fallback poll."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.client = guard_redis()
        # Its own client, without redis-py's periodic health-check PING: the reader thread would send it
        # outside the lock the waiters send their SUBSCRIBEs under, and could split one on the wire.
        # Named, so `CLIENT LIST` shows whose it is.
        self.pubsub: PubSub = make_client(redis_target(get_settings()), health_check_interval=0,
                                          client_name=hub_name()).pubsub()
        self.lock = threading.Lock()
        self.confirmed = threading.Condition(self.lock)
        self.boxes: dict[str, set[_Box]] = {}
        self.unconfirmed: dict[str, int] = {}  # SUBSCRIBEs sent for a channel, not yet confirmed
        self.stopped = threading.Event()
        self.pubsub.subscribe(HUB_CHANNEL)
        deadline = time.monotonic() + CONFIRM_S
        while True:  # the first confirmation, read here: the reader starts on a subscribed connection
            msg = self.pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
            if msg is not None and msg["type"] == "subscribe":
                break
            if time.monotonic() >= deadline:
                self.pubsub.close()
                raise redis.TimeoutError("no confirmation of SUBSCRIBE from Redis")
        self.thread = threading.Thread(target=self._read, name="opsq-waiting", daemon=True)
        self.thread.start()

    def watch(self, channels: list[str], box: _Box) -> None:
        """`box` gets what is published on `channels` from when this returns (Redis confirmed). The SUBSCRIBE is
        sent under the lock, so the commands reach Redis in the order the bookkeeping decided them (a waiter's
        SUBSCRIBE can never be overtaken by the UNSUBSCRIBE of the last waiter before it)."""
        new: list[str] = []
        with self.lock:
            for channel in channels:
                watchers = self.boxes.setdefault(channel, set())
                if not watchers:
                    new.append(channel)
                    self.unconfirmed[channel] = self.unconfirmed.get(channel, 0) + 1
                watchers.add(box)
            try:
                for i in range(0, len(new), SUBSCRIBE_BATCH):
                    self.pubsub.subscribe(*new[i:i + SUBSCRIBE_BATCH])
            except BaseException:
                # Not sent (or not all of it): no confirmation will come for these; take the box back out.
                for channel in new:
                    still = self.unconfirmed.get(channel, 0) - 1
                    if still > 0:
                        self.unconfirmed[channel] = still
                    else:
                        self.unconfirmed.pop(channel, None)
                self._forget(channels, box)
                raise
        deadline = time.monotonic() + CONFIRM_S
        with self.lock:
            while any(self.unconfirmed.get(c) for c in channels):
                left = deadline - time.monotonic()
                if left <= 0 or self.stopped.is_set():
                    raise redis.TimeoutError("no confirmation of SUBSCRIBE from Redis")
                self.confirmed.wait(left)

    def unwatch(self, channels: list[str], box: _Box) -> None:
        with self.lock:
            gone = self._forget(channels, box)
            # A failure here leaves the channel subscribed (redis-py subscribes again to it on reconnect): its
            # next confirmation, with nobody watching, unsubscribes it (_dispatch).
            with contextlib.suppress(redis.RedisError, OSError):
                for i in range(0, len(gone), SUBSCRIBE_BATCH):
                    self.pubsub.unsubscribe(*gone[i:i + SUBSCRIBE_BATCH])

    def _forget(self, channels: list[str], box: _Box) -> list[str]:
        """Under the lock: `box` no longer watches `channels`; returns those nobody watches now."""
        gone: list[str] = []
        for channel in channels:
            watchers = self.boxes.get(channel)
            if watchers is None:
                continue
            watchers.discard(box)
            if not watchers:
                del self.boxes[channel]
                gone.append(channel)
        return gone

    def _read(self) -> None:
        pause = 0.1
        while not self.stopped.is_set():
            try:
                msg = self.pubsub.get_message(timeout=1.0)
            except Exception as exc:  # Redis gone (or any surprise): never let the reader die
                if self.stopped.is_set():
                    return
                log.debug("waiting: the subscription broke (%s); subscribing again", exc)
                self._broke()
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.1
            if msg is not None:
                self._dispatch(msg)

    def _dispatch(self, msg: dict[str, object]) -> None:
        channel = as_text(msg["channel"])  # type: ignore[arg-type]
        if msg["type"] == "subscribe":
            with self.lock:
                left = self.unconfirmed.get(channel, 0) - 1  # a resubscription after a reconnect was not counted
                if left > 0:
                    self.unconfirmed[channel] = left
                else:
                    self.unconfirmed.pop(channel, None)
                self.confirmed.notify_all()
                if channel != HUB_CHANNEL and channel not in self.boxes and left < 0:
                    # Subscribed again by a reconnect after its last waiter left: nobody wants it.
                    with contextlib.suppress(redis.RedisError, OSError):
                        self.pubsub.unsubscribe(channel)
        elif msg["type"] == "message":
            with self.lock:
                watchers = list(self.boxes.get(channel, ()))
            data = as_text(msg["data"])  # type: ignore[arg-type]
            for box in watchers:
                box.inbox.put((channel, data))

    def _broke(self) -> None:
        with self.lock:
            # What was awaiting confirmation is confirmed by the resubscription, or never: its waiters poll.
            self.unconfirmed.clear()
            self.confirmed.notify_all()
            watchers = {box for boxes in self.boxes.values() for box in boxes}
        for box in watchers:
            box.inbox.put((None, None))

    def close(self) -> None:
        self.stopped.set()
        with self.lock:
            self.confirmed.notify_all()
        with contextlib.suppress(Exception):  # closing a broken connection
            self.pubsub.close()


_hub: _Hub | None = None
_hub_lock = threading.Lock()
_hub_failed_at = 0.0
#: After a failed attempt to make the hub (Redis unreachable), waiters poll for this long before one tries
#: again: otherwise each would wait its turn behind the lock for a connect timeout.
HUB_RETRY_S = 1.0


def _the_hub() -> _Hub:
    """This process's hub, made on first use (a forked child, or new settings, get a new one)."""
    global _hub, _hub_failed_at
    hub = _hub
    if hub is not None and hub.pid == os.getpid() and hub.client is guard_redis() and not hub.stopped.is_set():
        return hub
    if time.monotonic() - _hub_failed_at < HUB_RETRY_S:
        raise redis.ConnectionError("the waiting hub could not reach Redis a moment ago")
    with _hub_lock:
        hub = _hub
        if hub is None or hub.pid != os.getpid() or hub.client is not guard_redis() or hub.stopped.is_set():
            if hub is not None and hub.pid == os.getpid():
                hub.close()
            try:
                hub = _hub = _Hub()
            except BaseException:
                _hub_failed_at = time.monotonic()
                raise
    return hub


@contextmanager
def _listening(channels: list[str]) -> Iterator[_Box | None]:
    """A box told what is published on `channels`, from the moment this yields; None when Redis cannot be
    reached for it (the waiter then polls)."""
    box = _Box()
    try:
        hub = _the_hub()
    except (redis.RedisError, OSError) as exc:
        log.debug("waiting by polling: cannot subscribe (%s)", exc)
        yield None
        return
    try:
        hub.watch(channels, box)
    except (redis.RedisError, OSError) as exc:
        log.debug("waiting by polling: cannot subscribe (%s)", exc)
        hub.unwatch(channels, box)
        yield None
        return
    except BaseException:
        hub.unwatch(channels, box)
        raise
    try:
        yield box
    finally:
        hub.unwatch(channels, box)


def _block(box: _Box | None, timeout: float) -> list[tuple[str | None, str | None]]:
    """What was published within `timeout` (or (None, None): notifications may have been missed); sleeps
    it out when there is no box."""
    if box is not None:
        return box.take(timeout)
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

    if _succeeded_in_redis(action_id):
        # Done before the wait began (a handle waited for long after its submit): no subscription to make.
        view = read(RunState.DONE)
        if view.done:
            return view
        stored = None
    return wait_until(keys.outcome_channel(action_id), read, lambda view: view.done, timeout,
                      lambda view: f"action {action_id} still {view.status} after {timeout:g}s")


def _succeeded_in_redis(action_id: str) -> bool:
    """One round trip to Redis, no store query: only a success is final in the execution record alone (a
    failure is final once the store has it)."""
    if not get_settings().guards_enabled:
        return False
    try:
        state = guard_redis().hget(keys.run(action_id), "state")
    except redis.RedisError:
        return False
    return state is not None and as_text(state) == RunState.DONE


def wait_until(channel: str, read: Callable[[str | None], T], done: Callable[[T], bool], timeout: float,
               timed_out: Callable[[T], str]) -> T:
    """Reads with `read` until `done` says yes, again each time `channel` publishes (`read` gets what was
    published; None on the first read and a fallback poll); TimeoutError(timed_out(last read)) after `timeout`.
    Subscribes first and reads once subscribed, so a publish that follows the state it announces is never
    missed, and a wait that is woken reads the store once (the subscription is one round trip to Redis on the
    process' shared connection)."""
    deadline = time.monotonic() + timeout
    with _listening([channel]) as box:
        fallback = FALLBACK_MIN_S
        note: str | None = None
        while True:
            value = read(note)
            if done(value):
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(timed_out(value))
            told = _block(box, min(left, fallback))
            notes = [data for ch, data in told if ch == channel]
            note = notes[-1] if notes else None
            if not told:
                fallback = min(fallback * 2, FALLBACK_MAX_S)


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
        with _listening(list(by_channel)) as box:
            _wait_open(pending, by_channel, box, conn, deadline, timeout)


def _wait_open(pending: list[str], by_channel: dict[str, str], box: _Box | None, conn: Connection,
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
        for channel, _ in _block(box, min(deadline, next_poll) - now):
            if channel is None:  # the subscription broke: what it may have missed is read now
                next_poll = time.monotonic()
                continue
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

