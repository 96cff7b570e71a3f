"""The consuming workers as Redis sees them (workers.held_messages): which are alive, what each holds, and
giving back at once what a worker the operator knows is dead held (`opsq workers forget NODE`)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from workers import held_messages
from workers.celery_app import app
from workers.errors import OpsqError
from workers.guards.connection import as_text, guard_redis
from workers.store import audit


@dataclass(frozen=True)
class Consumer:
    owner: str
    node: str
    alive: bool
    held: int
    seen_s_ago: float | None  # since its last heartbeat, while its liveness key lasts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def consumers() -> list[Consumer]:
    r = guard_redis()
    owners = sorted(as_text(o) for o in r.smembers(held_messages.CONSUMERS_KEY))
    pipe = r.pipeline(transaction=False)
    for owner in owners:
        pipe.get(held_messages.alive_key(owner))
        pipe.scard(held_messages.held_key(owner))
    replies = pipe.execute()
    now = time.time()
    out = []
    for i, owner in enumerate(owners):
        beat, held = replies[2 * i], replies[2 * i + 1]
        seen = None
        if beat:
            try:
                seen = max(now - float(as_text(beat).split()[1]), 0.0)
            except (IndexError, ValueError):
                seen = None
        out.append(Consumer(owner=owner, node=held_messages.node_of(owner), alive=bool(beat), held=int(held),
                            seen_s_ago=seen))
    return out


def forget(node: str, *, force: bool = False, actor: str | None = None) -> int:
    """Gives back every message `node` holds, now. Refused while the node still sends heartbeats, unless
    `force` (its messages then run twice in parallel at most as far as the guards allow: not at all)."""
    mine = [c for c in consumers() if c.node == node]
    if not mine:
        raise OpsqError(f"no worker named {node!r} is known to Redis (opsq workers list shows the known ones)")
    alive = [c for c in mine if c.alive]
    if alive and not force:
        raise OpsqError(f"{node} is alive (heartbeat {alive[0].seen_s_ago or 0:.0f}s ago): stop it first, or pass "
                        "--force if you know its host is gone")
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel  # kombu's restore needs a channel: its queue bindings, its priorities
        client = channel._create_client()
        given = sum(held_messages.give_back(client, channel, c.owner, "forgotten by an operator") for c in mine)
    audit.append("worker_forget", f"worker:{node}", {"messages_given_back": given, "forced": bool(alive)},
                 actor=actor)
    return given
