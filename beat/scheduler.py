"""A beat scheduler that runs the schedule on one beat only, however many are started.

Celery beat has no leader election of its own. Each beat ticks; only the one holding a Redis lock
(renewed every tick, expiring if its holder dies) sends anything. A standby beat takes over within
`LOCK_TTL_S` of the leader's death. Start it with `opsq beat`, or
`celery -A workers.celery_app beat -S beat.scheduler:LeaderScheduler`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

import redis
from celery.beat import Scheduler

from beat import alerts
from beat.schedule import MAINTENANCE_TASK, build
from workers import held_messages, scheduling
from workers.client import redis_cause
from workers.guards.connection import guard_redis
from workers.guards.scripts import RELEASE_KEY
from workers.queues import MAINTENANCE_QUEUE
from workers.settings import get_settings
from workflows.client import release_due as release_due_workflows

LOCK_KEY = "opsq:beat:leader"
#: The beat that leads or led last, until it stops cleanly (close() deletes it): found naming another beat by a
#: new leader, that one died leading (_took_over).
LED_BY_KEY = "opsq:beat:led_by"
HEARTBEAT_KEY = "opsq:beat:heartbeat"
LOCK_TTL_S = 10.0
WATCH_EVERY_S = 2.0
RELEASE_EVERY_S = 1.0

# Take the lock if free, or renew it if it is ours: one atomic step, so two beats never both hold it.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class LeaderScheduler(Scheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.redis = guard_redis()
        self._acquire = self.redis.register_script(_ACQUIRE)
        # Delete the lock only if it is still ours (the same compare-and-delete as an idempotency key's).
        self._release = self.redis.register_script(RELEASE_KEY)
        self.leader: bool | None = None
        self._redis_run_id: str | None = None
        self._next_watch = 0.0
        self._recovery_sent_at = 0.0
        self._next_memory_check = 0.0
        # What the redis_memory rule said last (key, severity, message): a Redis that fills up goes from a
        # warning to full under the same key, and the alert must follow it.
        self._memory_state: tuple[tuple[str, str, str], ...] | None = None
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        self.merge_inplace(build(get_settings()))

    def _hold_lock(self) -> bool:
        held = bool(self._acquire(keys=[LOCK_KEY], args=[self.token, int(LOCK_TTL_S * 1000)]))
        if held != self.leader:
            self.logger.warning("beat %s: %s", self.token, "now the leader: running the schedule" if held
                                else "another beat holds the lock: standing by")
            self.leader = held
            if held:
                self._took_over()
        return held

    def _took_over(self) -> None:
        """A leader that died (SIGKILL, its host gone) may have claimed a scheduled action and not sent it yet
        (workers.scheduling): its row is `queued` with no message. A leader that stops cleanly says so (close()
        deletes LED_BY_KEY); found still naming another beat, the lost-message scan (recover_lost) runs now,
        not detect_stuck's OPSQ_STUCK_AFTER_S later. It re-sends only what has no message anywhere and no
        outcome, so a leader that had sent everything costs one scan."""
        before = self.redis.getset(LED_BY_KEY, self.token)  # GETSET: any Redis version
        before = before.decode() if isinstance(before, bytes) else before
        if before is not None and before != self.token:
            self.logger.warning("beat %s: the previous leader %s did not stop cleanly; looking for lost messages "
                                "(a scheduled action it claimed and had not sent)", self.token, before)
            held_messages.request_recovery(self.redis, "beat leader died")

    def tick(self, *args: Any, **kwargs: Any) -> float:
        # Redis gone (restarting, failing over) must not end beat: it stands by and tries again each second,
        # and whoever holds the lock when Redis is back leads (a lock lost with Redis' data is simply free).
        try:
            if not self._hold_lock():
                return 1.0
            self.redis.set(HEARTBEAT_KEY, json.dumps({"beat": self.token, "at": time.time()}),
                           ex=int(LOCK_TTL_S * 6))
            self._watch_for_losses()
            self._watch_memory()
            self._release_scheduled()
        except redis.RedisError as exc:
            if self.leader is not False:
                self.logger.warning("beat %s: Redis refused (%s); standing by until it answers again", self.token,
                                    redis_cause(exc))
            self.leader = False
            self._watch_memory()
            return 1.0
        next_tick: float = super().tick(*args, **kwargs)
        # At least once a second: scheduled actions are sent at the first tick after they are due.
        return min(next_tick, RELEASE_EVERY_S)

    def _release_scheduled(self) -> None:
        """The leader sends the scheduled actions that are due (workers.scheduling: exactly once, whoever else
        looks) and starts the scheduled workflows (workflows.client.release_due). The database away must not
        stop the beat: the next tick tries again."""
        try:
            scheduling.release_due()
            release_due_workflows()
        except redis.RedisError:
            raise
        except Exception as exc:
            self.logger.warning("beat %s: could not send the scheduled actions that are due: %s", self.token,
                                " ".join(str(exc).split())[:300])

    def _watch_memory(self) -> None:
        """Redis full refuses every task beat would send, evaluate_alerts included, so beat itself watches
        the redis_memory rule (every OPSQ_BEAT_MEMORY_CHECK_S, 15 s, one INFO) and raises or clears that alert
        straight in the database when its state changes. Leader or not: a full Redis can refuse the leader's lock
        too."""
        now = time.monotonic()
        if now < self._next_memory_check:
            return
        self._next_memory_check = now + get_settings().beat_memory_check_s
        try:
            conditions = alerts.redis_memory_conditions()
            state = tuple(sorted((c.key, c.severity, c.message) for c in conditions))
            if state != self._memory_state:
                result = alerts.sync(conditions, ("redis_memory",))
                self._memory_state = state
                if result["fired"] or result["escalated"]:
                    self.logger.warning("beat %s: alert redis_memory raised (%s): %s", self.token,
                                        conditions[0].severity, conditions[0].message)
        except Exception as exc:  # Redis or the database away: the next check tries again; beat goes on
            self.logger.warning("beat %s: could not check Redis memory: %s", self.token, exc)

    def _watch_for_losses(self) -> None:
        """A loss reported by a worker (workers.held_messages) or a Redis restart seen here (its run_id
        changed: whatever it held since its last fsync, or everything, is gone) starts the recover_lost job
        at once, instead of detect_stuck's OPSQ_STUCK_AFTER_S later."""
        now = time.monotonic()
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_EVERY_S
        run_id = str(self.redis.info("server").get("run_id"))
        if self._redis_run_id is not None and run_id != self._redis_run_id:
            self.logger.warning("beat %s: Redis restarted (run_id changed); looking for lost messages", self.token)
            held_messages.request_recovery(self.redis, "Redis restarted")
        self._redis_run_id = run_id
        # One job at a time: it clears the report; sent again only if still there 15 s later (a job lost).
        if self.redis.exists(held_messages.RECOVERY_KEY) and now - self._recovery_sent_at > 15.0:
            self._recovery_sent_at = now
            self.app.send_task(MAINTENANCE_TASK, args=("recover_lost",), queue=MAINTENANCE_QUEUE,
                               routing_key=MAINTENANCE_QUEUE, priority=0)  # 0: first (kombu)

    def close(self) -> None:
        try:
            self._release(keys=[LED_BY_KEY], args=[self.token])  # stopped cleanly: nothing left half-sent
            self._release(keys=[LOCK_KEY], args=[self.token])
        except redis.RedisError:
            pass  # the lock expires by itself
        finally:
            super().close()
