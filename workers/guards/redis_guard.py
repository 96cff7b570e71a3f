"""Admit and settle, one Lua script each: one Redis round trip before a call and one after."""

from __future__ import annotations

import json

import redis

from workers.guards import keys, scripts
from workers.guards.base import Admission, Attempt, Outcome
from workers.guards.connection import guard_redis
from workers.settings import Settings
from workers.status import Verdict

HISTORY_MAX = 1000


class RedisGuard:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or guard_redis(settings)
        # register_script sends EVALSHA and falls back to EVAL once if the server lacks the script.
        self._admit = self.redis.register_script(scripts.ADMIT)
        self._settle = self.redis.register_script(scripts.SETTLE)

    def admit(self, attempt: Attempt) -> Admission:
        s = self.settings
        breaker = s.breaker_config(attempt.platform)
        limit = s.rate_limit(attempt.platform)
        reply = self._admit(
            keys=keys.action_keys(attempt.platform, attempt.action_id),
            args=[attempt.token, s.lease_s, s.idempotency_ttl_s, breaker.open_s, breaker.half_open_max,
                  limit.rate, limit.burst, int(attempt.fail_fast), attempt.attempt, HISTORY_MAX],
        )
        verdict, detail, probe = reply[:3]
        reconcile = reply[3] if len(reply) > 3 else 0  # only a `run` says whether to reconcile
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        detail = detail.decode() if isinstance(detail, bytes) else detail
        if verdict == Verdict.RUN:
            return Admission(probe=bool(probe), reconcile=bool(reconcile),
                             since=float(detail) if reconcile and detail else None)
        if verdict == Verdict.DONE:
            return Admission(verdict=Verdict.DONE, result=json.loads(detail or "{}"))
        if verdict == Verdict.FAILED:
            return Admission(verdict=Verdict.FAILED, error=json.loads(detail or "{}"))
        return Admission(verdict=verdict, wait_s=float(detail))

    def settle(self, attempt: Attempt, admission: Admission, outcome: Outcome) -> str:
        s = self.settings
        breaker = s.breaker_config(attempt.platform)
        if outcome.ok:
            payload = json.dumps(outcome.result, sort_keys=True, default=str)
        else:
            payload = json.dumps({"kind": outcome.error_kind, "message": outcome.error})
        state = self._settle(
            keys=keys.action_keys(attempt.platform, attempt.action_id),
            args=[attempt.token, int(outcome.ok), int(outcome.health_failure), int(admission.probe), payload,
                  int(outcome.final), s.idempotency_ttl_s, breaker.failure_threshold, breaker.window_s,
                  HISTORY_MAX, outcome.error_kind or "", int(outcome.ambiguous),
                  keys.outcome_channel(attempt.action_id)],
        )
        return state.decode() if isinstance(state, bytes) else str(state)
