"""Queue operations for operators: depth per priority, consumers, pause/resume, clear.

A pause is remembered in Redis (`opsq:paused_queues`): the workers consuming the queue are told to stop
(Celery's cancel_consumer), and a worker started later skips it too (see `skip_paused_queues`), until
`resume` tells exactly those workers to start again.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from kombu.transport.redis import Channel
from sqlalchemy import Connection

from workers.guards.connection import as_text, guard_redis
from workers.priorities import PRIORITY_NAMES, PRIORITY_STEPS
from workers.queues import ALL_QUEUES
from workers.status import ErrorKind
from workers.store import actions as store
from workers.store import audit
from workers.store.actions import find
from workers.store.models import as_utc, utcnow

PAUSED = "opsq:paused_queues"
SEP = Channel.sep  # kombu's separator between a queue's name and its priority step


def check_queue(queue: str) -> str:
    if queue not in ALL_QUEUES:
        raise ValueError(f"unknown queue {queue!r} (known: {', '.join(ALL_QUEUES)})")
    return queue


def priority_lists(queue: str) -> dict[str, str]:
    """The Redis list behind each priority of a queue (kombu: step 0 is the plain name)."""
    return {name: queue if step == 0 else f"{queue}{SEP}{step}" for name, step in zip(PRIORITY_NAMES, PRIORITY_STEPS,
                                                                                       strict=True)}


def _message_id(raw: bytes | str) -> tuple[str | None, str | None]:
    try:
        msg = json.loads(raw)
    except (TypeError, ValueError):
        return None, None
    if isinstance(msg, list):  # entries of the unacked hash: [message, exchange, routing_key]
        msg = msg[0] if msg else {}
    headers = msg.get("headers", {}) if isinstance(msg, dict) else {}
    return headers.get("id"), headers.get("task")


def consumers(app: Any, timeout: float = 1.0) -> dict[str, list[str]]:
    """queue -> the workers consuming it now."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    out: dict[str, list[str]] = {q: [] for q in ALL_QUEUES}
    for worker, queues in replies.items():
        for q in queues:
            out.setdefault(q["name"], []).append(worker)
    return out


def status(app: Any, client: redis.Redis | None = None, with_consumers: bool = True) -> list[dict[str, Any]]:
    r = client or guard_redis()
    cons = consumers(app) if with_consumers else {}
    paused = {as_text(k): json.loads(v) for k, v in r.hgetall(PAUSED).items()}
    pipe = r.pipeline(transaction=False)
    for q in ALL_QUEUES:
        for key in priority_lists(q).values():
            pipe.llen(key)
            pipe.lindex(key, -1)  # LPUSH in, BRPOP out: the tail is the oldest
    replies = iter(pipe.execute())
    out = []
    for q in ALL_QUEUES:
        depth: dict[str, int] = {}
        oldest = None
        for name in priority_lists(q):
            depth[name] = int(next(replies))
            tail = next(replies)
            if tail is not None:
                task_id, _ = _message_id(tail)
                view = find(task_id) if task_id else None
                if view and (oldest is None or view.created_at < oldest):
                    oldest = view.created_at
        # The age is computed here once: `opsq queue status`, the exporter and beat's alert read this one figure.
        out.append({"queue": q, "depth": sum(depth.values()), "by_priority": depth,
                    "oldest_enqueued_at": oldest.isoformat() if oldest else None,
                    "oldest_age_s": round(max(0.0, (utcnow() - as_utc(oldest)).total_seconds()), 3) if oldest else 0.0,
                    "consumers": cons.get(q, []), "paused": q in paused})
    return out


def pause(app: Any, queue: str, actor: str | None = None, client: redis.Redis | None = None) -> list[str]:
    """Stop every worker consuming `queue` (within a second) and remember it for workers started later.
    Audited, or not done at all (workers.store.audit.audited_change): with the database down the queue
    keeps running and the operator is told."""
    r = client or guard_redis()
    check_queue(queue)

    def change() -> tuple[list[str], bytes | str | None]:
        now_consuming = consumers(app).get(queue, [])
        before = r.hget(PAUSED, queue)
        r.hset(PAUSED, queue, json.dumps(sorted(set(json.loads(before or "[]")) | set(now_consuming))))
        if now_consuming:
            app.control.cancel_consumer(queue, destination=now_consuming, reply=True, timeout=1.0)
        return now_consuming, before

    def undo(done: tuple[list[str], bytes | str | None]) -> None:
        stopped, before = done
        if before is None:
            r.hdel(PAUSED, queue)
        else:
            r.hset(PAUSED, queue, before)
        if stopped:
            app.control.add_consumer(queue, destination=stopped, reply=True, timeout=1.0)

    stopped, _ = audit.audited_change(
        change, lambda done: ("queue_pause", f"queue:{queue}", {"workers": done[0]}), undo,
        subject=f"queue {queue}", verb="paused", actor=actor)
    return stopped


def resume(app: Any, queue: str, actor: str | None = None, client: redis.Redis | None = None) -> list[str]:
    """Start the paused queue again on the workers that consumed it (or skipped it while paused). Audited,
    or not done at all (as `pause`)."""
    r = client or guard_redis()
    check_queue(queue)

    def change() -> tuple[list[str], bytes | str | None]:
        before = r.hget(PAUSED, queue)
        r.hdel(PAUSED, queue)
        alive = list((app.control.inspect(timeout=1.0).ping() or {}).keys())
        targets = [w for w in json.loads(before or "[]") if w in alive]
        if targets:
            app.control.add_consumer(queue, destination=targets, reply=True, timeout=1.0)
        return targets, before

    def undo(done: tuple[list[str], bytes | str | None]) -> None:
        started, before = done
        if before is not None:
            r.hset(PAUSED, queue, before)
        if started:
            app.control.cancel_consumer(queue, destination=started, reply=True, timeout=1.0)

    started, _ = audit.audited_change(
        change, lambda done: ("queue_resume", f"queue:{queue}", {"workers": done[0]}), undo,
        subject=f"queue {queue}", verb="resumed", actor=actor)
    return started


def paused_queues(client: redis.Redis | None = None) -> dict[str, list[str]]:
    r = client or guard_redis()
    return {as_text(k): json.loads(v) for k, v in r.hgetall(PAUSED).items()}


def skip_paused_queues(hostname: str, selected: list[str], client: redis.Redis | None = None) -> list[str]:
    """For a worker starting up: which of its queues are paused (it registers itself, so resume
    restarts it too)."""
    r = client or guard_redis()
    skipped = []
    for queue, workers in paused_queues(r).items():
        if queue in selected:
            r.hset(PAUSED, queue, json.dumps(sorted({*workers, hostname})))
            skipped.append(queue)
    return skipped


def clear(queue: str, actor: str | None = None, client: redis.Redis | None = None) -> dict[str, Any]:
    """Purge every priority list of `queue` atomically, marking the dropped actions failed and recording
    what was dropped in the audit trail, in one transaction. If that cannot be written, the messages are
    put back where they were (at the consuming end, before anything queued since) and nothing is failed."""

    r = client or guard_redis()
    check_queue(queue)
    lists = list(priority_lists(queue).values())
    who = actor or audit.default_actor()

    def change() -> list[list[bytes]]:
        pipe = r.pipeline(transaction=True)
        for key in lists:
            pipe.lrange(key, 0, -1)
        for key in lists:
            pipe.delete(key)
        return list(pipe.execute()[: len(lists)])

    def undo(taken: list[list[bytes]]) -> None:
        pipe = r.pipeline(transaction=True)
        for key, msgs in zip(lists, taken, strict=True):
            if msgs:  # LRANGE gave them newest first; RPUSH puts the oldest back at the consuming end
                pipe.rpush(key, *msgs)
        pipe.execute()

    def dropped_of(taken: list[list[bytes]]) -> list[dict[str, Any]]:
        out = []
        for raw in (m for msgs in taken for m in msgs):
            task_id, task = _message_id(raw)
            out.append({"id": task_id, "task": task})
        return out

    def fail_dropped(conn: Connection, taken: list[list[bytes]]) -> None:
        for item in dropped_of(taken):
            if item["task"] == "opsq.execute_action" and item["id"]:
                view = store.find(item["id"])
                if view and not view.done:
                    store.mark_failed(item["id"], view.attempts, f"dropped from queue {queue} by {who}",
                                      ErrorKind.PURGED, conn=conn)

    def entry(taken: list[list[bytes]]) -> tuple[str, str, dict[str, Any]]:
        dropped = dropped_of(taken)
        return "queue_clear", f"queue:{queue}", {"dropped": len(dropped), "messages": dropped[:1000]}

    taken = audit.audited_change(change, entry, undo, subject=f"queue {queue}", verb="cleared", actor=who,
                                 with_entry=fail_dropped)
    dropped = dropped_of(taken)
    return {"queue": queue, "dropped": len(dropped), "messages": dropped}


def message_ids_in_flight(client: redis.Redis | None = None, max_per_list: int = 20000) -> tuple[set[str], set[str]]:
    """Task ids of every message waiting in a queue or delivered but not acknowledged; and the queues too
    long to scan (their actions are taken as present)."""
    r = client or guard_redis()
    ids: set[str] = set()
    too_long: set[str] = set()
    for q in ALL_QUEUES:
        for key in priority_lists(q).values():
            n = r.llen(key)
            if n > max_per_list:
                too_long.add(q)
                continue
            for raw in r.lrange(key, 0, -1):
                task_id, _ = _message_id(raw)
                if task_id:
                    ids.add(task_id)
    for raw in r.hvals("unacked"):
        task_id, _ = _message_id(raw)
        if task_id:
            ids.add(task_id)
    return ids, too_long
