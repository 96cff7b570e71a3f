"""The quarantine: queue items a worker could not deliver (workers.broker_transport) or run (workers.consumer),
for operators: list, drop, and requeue the messages a worker could run after all (a newer version, other
settings)."""

from __future__ import annotations

import json
from bisect import bisect
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from workers.broker_transport import QUARANTINE_KEY, QUARANTINED_COUNT_KEY, NotAMessage, check_message
from workers.errors import OpsqError
from workers.guards.connection import guard_redis
from workers.priorities import PRIORITY_STEPS
from workers.store import audit


def entries(limit: int = 100, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """The newest first, each as recorded: queue, reason, size, time, the first bytes (base64)."""
    r = client or guard_redis()
    return [json.loads(raw) for raw in r.lrange(QUARANTINE_KEY, 0, limit - 1)]


def counts(client: redis.Redis | None = None) -> dict[str, int]:
    """How many are kept now, and how many were ever quarantined."""
    r = client or guard_redis()
    pipe = r.pipeline(transaction=False)
    pipe.llen(QUARANTINE_KEY)
    pipe.get(QUARANTINED_COUNT_KEY)
    kept, total = pipe.execute()
    return {"kept": int(kept), "total": int(total or 0)}


def drop(actor: str | None = None, client: redis.Redis | None = None) -> int:
    """Empty the quarantine (what an operator does once the sender is fixed); audited, and put back if its
    entry cannot be written (workers.store.audit.audited_change)."""
    r = client or guard_redis()

    def change() -> list[bytes]:
        pipe = r.pipeline(transaction=True)
        pipe.lrange(QUARANTINE_KEY, 0, -1)
        pipe.delete(QUARANTINE_KEY)
        items: list[bytes] = pipe.execute()[0]
        return items

    def undo(items: list[bytes]) -> None:
        if items:
            r.rpush(QUARANTINE_KEY, *items)  # newest first, as they were; anything quarantined since stays ahead

    dropped = audit.audited_change(change, lambda items: ("quarantine_drop", "quarantine", {"dropped": len(items)}),
                                   undo, subject="the quarantine", verb="dropped",
                                   actor=actor or audit.default_actor())
    return len(dropped)


# Put one quarantined item back on its queue, atomically: the item is removed from the quarantine only by the
# one who puts it back (two operators requeueing at once move it once), and only if it is still there.
_REQUEUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


@dataclass
class Requeued:
    requeued: list[dict[str, Any]] = field(default_factory=list)  # {index, queue, task, id}
    refused: list[tuple[int, str]] = field(default_factory=list)  # (index, why it cannot be requeued)


def why_not_requeueable(record: dict[str, Any]) -> str | None:
    """None if the item is a whole, valid task message that another worker could run; else why not."""
    if record.get("stage") != "consumer":
        return f"it is not a message ({record.get('reason')})"
    if not record.get("requeueable"):
        if "message" not in record:
            return f"it was too large to keep whole ({record.get('bytes')} bytes)"
        return f"no worker can run it ({record.get('reason')})"
    message = record.get("message")
    if not isinstance(message, str):
        return "it was not kept whole"
    try:
        payload = check_message(message)
    except NotAMessage as exc:
        return f"it is not a message ({exc})"
    if not isinstance(payload.get("headers"), dict) or "task" not in payload["headers"]:
        return "it has no task header"
    return None


def queue_key(queue: str, message: dict[str, Any]) -> str:
    """The Redis list kombu's Redis transport keeps the message's priority in (its _q_for_pri)."""
    try:
        priority = max(0, min(int(message["properties"]["priority"]), 9))
    except (KeyError, TypeError, ValueError):
        priority = 0
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, priority) - 1]
    return f"{queue}{kombu_redis.Channel.sep}{step}" if step else queue


def requeue(index: int | None = None, *, every: bool = False, actor: str | None = None,
            client: redis.Redis | None = None) -> Requeued:
    """Put quarantined messages back on their queues: the item at `index` (as `entries` lists them, newest 0), or
    `every` one that can be (oldest first, so they keep their order). Items that are not whole, valid task
    messages stay, each with the reason. Audited when something was requeued."""
    if (index is None) == (not every):
        raise OpsqError("give the index of one quarantined item (opsq queue quarantine list) or --all")
    r = client or guard_redis()
    if every:
        raws = r.lrange(QUARANTINE_KEY, 0, -1)
        candidates = list(reversed(list(enumerate(raws))))
    else:
        assert index is not None
        raw = r.lindex(QUARANTINE_KEY, index)
        if raw is None:
            raise OpsqError(f"no quarantined item {index} (opsq queue quarantine list shows their numbers)")
        candidates = [(index, raw)]
    script = r.register_script(_REQUEUE)
    out = Requeued()
    moved: list[tuple[Any, str, Any]] = []  # (quarantine item, queue list, message): what undo puts back

    def change() -> Requeued:
        for i, raw in candidates:
            record = json.loads(raw)
            why = why_not_requeueable(record)
            if why is not None:
                out.refused.append((i, why))
                continue
            message = json.loads(record["message"])
            target = queue_key(record["queue"], message)
            if script(keys=[QUARANTINE_KEY, target], args=[raw, record["message"]]):
                moved.append((raw, target, record["message"]))
                out.requeued.append({"index": i, "queue": record["queue"], "task": record.get("task"),
                                     "id": record.get("id")})
        return out

    def undo(_: Requeued) -> None:
        # Back into the quarantine what no worker has taken yet; a message already taken cannot be (the
        # operator is told by audited_change when undoing fails).
        for raw, target, message in moved:
            if not script(keys=[target, QUARANTINE_KEY], args=[message, raw]):
                raise OpsqError(f"a requeued message was already taken from {target}")

    def entry(result: Requeued) -> tuple[str, str | None, dict[str, Any]]:
        return ("quarantine_requeue", "quarantine",
                {"requeued": [{k: m[k] for k in ("queue", "task", "id")} for m in result.requeued]})

    if any(why_not_requeueable(json.loads(raw)) is None for _, raw in candidates):
        audit.audited_change(change, entry, undo, subject="the quarantined messages", verb="requeued",
                             actor=actor or audit.default_actor())
    else:
        change()  # nothing can be requeued: nothing changes, nothing to audit
    if index is not None and out.refused:
        raise OpsqError(f"quarantined item {index} cannot be requeued: {out.refused[0][1]}")
    return out
