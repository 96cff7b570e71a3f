"""workers.held_messages: which consumer holds which message, and who counts as dead (fakeredis)."""

from __future__ import annotations

import threading
from typing import Any

import fakeredis

from workers import held_messages


class FakeChannel:
    """What the registry needs of a kombu channel: its owner and a client."""

    def __init__(self, owner: str, client: Any) -> None:
        self.opsq_owner = owner
        self._client = client

    def _create_client(self, asynchronous: bool = False) -> Any:
        return self._client

    @property
    def qos(self) -> Any:
        raise AssertionError("nothing is given back here")


def test_a_channel_counts_as_alive_from_its_registration_not_from_the_next_heartbeat() -> None:
    """A worker registers its channels one by one (the remote-control channel, then the task consumer's): the
    heartbeat thread, started by the first, beats every 2 s. A delivery adds its owner to the consumers at once
    (OwnedQoS.append), and another worker's reaper took an owner there without an alive key for a dead one: it
    gave back the messages a worker that had just started was running (under load, in most two-worker runs of
    test_database_outage), and they ran twice (answered by the guards)."""
    client = fakeredis.FakeRedis()
    registry = held_messages._ProcessRegistry()
    registry.thread = threading.current_thread()  # alive: no heartbeat thread here; beats are called by hand
    control = FakeChannel("w1@host|100|control", client)
    tasks = FakeChannel("w1@host|100|tasks", client)
    registry.register(control, ttl_s=10)
    registry.beat_once()  # the thread's first beat, with only the first channel registered
    registry.register(tasks, ttl_s=10)  # ... and the next beat is up to 2 s away
    client.sadd(held_messages.CONSUMERS_KEY, tasks.opsq_owner)  # its first delivery
    client.sadd(held_messages.held_key(tasks.opsq_owner), "tag-1")
    assert held_messages.dead_owners(client) == []  # what another worker's reaper sees


def test_an_owner_whose_heartbeat_ran_out_is_dead() -> None:
    client = fakeredis.FakeRedis()
    registry = held_messages._ProcessRegistry()
    registry.thread = threading.current_thread()
    registry.register(FakeChannel("w2@host|200|tasks", client), ttl_s=10)
    registry.beat_once()
    client.delete(held_messages.alive_key("w2@host|200|tasks"))  # its worker stopped beating ttl_s ago
    assert held_messages.dead_owners(client) == ["w2@host|200|tasks"]
    assert held_messages.dead_owners(client, exclude=["w2@host|200|tasks"]) == []
