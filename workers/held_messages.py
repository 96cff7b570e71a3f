"""Which consumer holds which delivered-but-unacknowledged message, and giving back what a dead one held.

Why this exists: kombu's Redis transport keeps a delivered message in one `unacked` hash with no owner and
puts it back only after the visibility timeout (an hour by default). A worker that was SIGKILLed, lost its
host, or lost its connection to Redis (its channel is closed, the messages it held are "restored" into a
connection that is gone: kombu#582) leaves its messages there for that hour. So:

- each consuming channel has an owner id (`node|pid|nonce`), and each delivery is also recorded in the
  owner's `opsq:held:<owner>` set, in the same MULTI as kombu's own unacked entry (no extra round trip);
- the worker process keeps a liveness key per live owner (`opsq:consumer:<owner>`, expiring after
  OPSQ_CONSUMER_TTL_S), written when the channel registers (before its first delivery) and kept fresh from
  a small thread, so a busy event loop does not make it look dead;
- every worker's thread looks for owners whose key ran out (or channels of its own that closed without
  giving their messages back) and puts their held messages back on their queues with kombu's own
  restore (a WATCHed transaction: two workers doing it at once restore each message once);
- each time something was given back it asks for a lost-message scan (`opsq:recovery:requested`): a message
  a dead worker had popped but not yet recorded (kombu pops with BRPOP and records afterwards) is in no
  queue and no unacked set; beat runs workers.ops.stuck.detect for the actions not touched since then.

A message given back while its worker is in fact still running it (a stalled process, a partition) is
harmless: the guards' execution record answers its redelivery with "busy", then with the stored outcome.
`opsq worker forget NODE` does the same at once for a node the operator knows is dead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import redis

log = logging.getLogger("opsq.worker")

CONSUMERS_KEY = "opsq:consumers"
RECOVERY_KEY = "opsq:recovery:requested"
#: The Celery node name of this worker; None outside a worker (the CLI, a client service): their consuming
#: channels (a control command's replies) hold no task messages and are not tracked.
_node: str | None = None


def alive_key(owner: str) -> str:
    return f"opsq:consumer:{owner}"


def held_key(owner: str) -> str:
    return f"opsq:held:{owner}"


def node_of(owner: str) -> str:
    return owner.split("|", 1)[0]


def set_node(name: str) -> None:
    """The Celery node name (`-n`), set when the worker starts: owners are named after it."""
    global _node
    _node = name


def new_owner() -> str | None:
    if _node is None:
        return None
    return f"{_node}|{os.getpid()}|{uuid.uuid4().hex[:8]}"


class RestoringChannel(Protocol):
    """What the reaper needs of a kombu Redis channel: its owner, a client, and kombu's restore."""

    opsq_owner: str

    def _create_client(self, asynchronous: bool = False) -> Any: ...

    @property
    def qos(self) -> Any: ...


def request_recovery(client: redis.Redis, why: str) -> None:
    """Asks beat for a lost-message scan now (workers.ops.stuck.detect for actions untouched since then)."""
    client.set(RECOVERY_KEY, f"{time.time()} {why}"[:200])


def give_back(client: redis.Redis, channel: RestoringChannel, owner: str, why: str) -> int:
    """Puts every message `owner` held back on its queue (kombu's restore_by_tag), forgets the owner and
    asks for a lost-message scan. Returns how many were given back."""
    tags = client.smembers(held_key(owner))
    restored = 0
    for tag in tags:
        # kombu's restore: a WATCHed transaction on the unacked hash. A tag already acked or restored
        # (by another worker's reaper, or the visibility sweep) has no entry left and restores nothing.
        if client.hexists(channel.qos.unacked_key, tag):
            channel.qos.restore_by_tag(tag.decode() if isinstance(tag, bytes) else tag, client=client)
            restored += 1
    retire(client, owner)
    request_recovery(client, f"{owner}: {why}")
    if restored:
        log.warning("gave back %d unacknowledged message(s) held by %s (%s)", restored, owner, why)
    return restored


def retire(client: redis.Redis, owner: str) -> None:
    pipe = client.pipeline()
    pipe.delete(held_key(owner))
    pipe.srem(CONSUMERS_KEY, owner)
    pipe.delete(alive_key(owner))
    pipe.execute()


def dead_owners(client: redis.Redis, exclude: Iterable[str] = ()) -> list[str]:
    owners = sorted(o.decode() if isinstance(o, bytes) else o for o in client.smembers(CONSUMERS_KEY))
    owners = [o for o in owners if o not in set(exclude)]
    if not owners:
        return []
    pipe = client.pipeline(transaction=False)
    for owner in owners:
        pipe.exists(alive_key(owner))
    return [o for o, alive in zip(owners, pipe.execute(), strict=True) if not alive]


class _ProcessRegistry:
    """This process's consuming channels, and the thread that keeps them alive and reaps the dead."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[str, RestoringChannel] = {}
        self.orphans: set[str] = set()  # our channels that closed without giving their messages back
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.ttl_s = 10.0

    def register(self, channel: RestoringChannel, ttl_s: float) -> None:
        with self.lock:
            self.ttl_s = ttl_s
            self.live[channel.opsq_owner] = channel
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="opsq-held-messages", daemon=True)
                self.thread.start()
        # Alive before it consumes anything, not from the thread's next beat (up to 2 s away when an earlier
        # channel started it): a delivery adds the owner to CONSUMERS_KEY at once, and another worker's reaper
        # takes an owner listed there without its alive key for a dead one and gives back what it is running.
        try:
            self._mark_alive(channel._create_client(), [channel.opsq_owner])
        except Exception as exc:  # Redis away: nothing is delivered either; the thread's beat tries again
            log.debug("held-messages registration could not reach Redis: %s", exc)

    def unregister(self, owner: str, *, gave_back: bool) -> None:
        with self.lock:
            self.live.pop(owner, None)
            if not gave_back:
                self.orphans.add(owner)

    def _mark_alive(self, client: redis.Redis, owners: Iterable[str]) -> None:
        pipe = client.pipeline()
        for owner in owners:
            pipe.set(alive_key(owner), f"{os.getpid()} {time.time():.0f}", px=int(self.ttl_s * 1000))
            pipe.sadd(CONSUMERS_KEY, owner)
        pipe.execute()

    def _run(self) -> None:
        while True:
            try:
                self.beat_once()
            except Exception as exc:  # Redis away: the next beat tries again; nothing here may end the thread
                log.debug("held-messages heartbeat failed: %s", exc)
            time.sleep(min(self.ttl_s / 5, 2.0))

    def beat_once(self) -> None:
        with self.lock:
            live = dict(self.live)
            orphans = set(self.orphans)
        if not live:
            return
        channel = next(iter(live.values()))
        client = channel._create_client()
        self._mark_alive(client, live)
        for owner in orphans:
            give_back(client, channel, owner, "its channel closed without giving them back (connection lost)")
            with self.lock:
                self.orphans.discard(owner)
        for owner in dead_owners(client, exclude=live):
            # One reaper per dead owner at a time; the restore itself is safe to race, this only saves work.
            if client.set(f"opsq:reaping:{owner}", "1", nx=True, px=int(self.ttl_s * 3000)):
                give_back(client, channel, owner, f"no heartbeat for {self.ttl_s:.0f}s: its worker is gone")


_registry = _ProcessRegistry()


def registry() -> _ProcessRegistry:
    global _registry
    if _registry.pid != os.getpid():  # a forked child consumes nothing of its parent's
        _registry = _ProcessRegistry()
    return _registry
