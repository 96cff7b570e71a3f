"""Admit and settle, one Lua script each: one Redis round trip before a call and one after.

With OPSQ_REDIS_REPLICA_ACKS set, each script is followed by Redis' WAIT in the same round trip (a pipeline:
WAIT counts the replicas that have this connection's writes, so it must go on the connection that wrote).
Why: replication is asynchronous, and a failover loses what the old master acknowledged but had not yet
sent. A claim lost that way lets the redelivered message call the platform a second time; a claim a replica
has means the new master answers "running elsewhere", then reconciles. So a claim no replica confirmed in
time is taken back before any call, and the action waits; a success no replica confirmed is written to the
database at once (the attempt ends `unsettled`), since the new master may never learn it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from workers.guards import keys, limits, scripts
from workers.guards.base import Admission, Attempt, Outcome
from workers.guards.connection import guard_redis
from workers.observability.durations import bucket_index
from workers.settings import Settings
from workers.status import Verdict

HISTORY_MAX = 1000

log = logging.getLogger("opsq.action")


def _timing(seconds: float | None) -> tuple[str | int, str | float]:
    """A duration as the settle script counts it: its bucket index and its seconds; empty when not timed."""
    if seconds is None:
        return "", ""
    return bucket_index(seconds), round(seconds, 6)


class NotReplicated(Exception):
    """A success settled on the master that no replica confirmed within the timeout (OPSQ_REDIS_REPLICA_ACKS)."""


class RedisGuard:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or guard_redis(settings)
        # register_script sends EVALSHA and falls back to EVAL once if the server lacks the script.
        self._admit = self.redis.register_script(scripts.ADMIT)
        self._settle = self.redis.register_script(scripts.SETTLE)
        self._release = self.redis.register_script(scripts.RELEASE_RUN)
        self.replica_acks = settings.redis_replica_acks
        self.ack_timeout_ms = settings.redis_replica_ack_timeout_ms
        # Limits (issue 14): the operators' runtime config as of `_limits_version` (None: not read yet). The admit
        # script compares that version with Redis' and answers `stale` (taking nothing) with the current config
        # when they differ, so a change reaches every worker at its next admission with no read of its own.
        self._limits_version: str | None = None
        self._runtime: dict[str, dict[str, dict[str, Any]]] = {}
        self._limits: dict[str, tuple[limits.Limits, dict[str, str], dict[str, str | None]]] = {}

    def _replicated(self, script: Any, keys: list[str], args: list[Any]) -> tuple[Any, bool]:
        """Runs `script`; with replica acks wanted, WAITs for them on the same connection, in the same round
        trip. Returns the script's reply and whether enough replicas have it."""
        if not self.replica_acks:
            return script(keys=keys, args=args), True
        # EVALSHA by hand: a Script given a pipeline makes redis-py check the script's existence in a round trip
        # of its own before every execute. If Redis lost the script (a restart), load it and go again.
        try:
            reply, acked = self._with_wait(script, keys, args).execute()
        except redis.exceptions.NoScriptError:
            self.redis.script_load(script.script)
            reply, acked = self._with_wait(script, keys, args).execute()
        return reply, int(acked) >= self.replica_acks

    def _with_wait(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        pipe = self.redis.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", self.replica_acks, self.ack_timeout_ms)
        return pipe

    # -- limits (issue 14) ---------------------------------------------------------------------------------------

    def _platform_limits(self, platform: str) -> tuple[limits.Limits, dict[str, str], dict[str, str | None]]:
        """The platform's limits under the runtime config this worker knows, where each kind of key is read
        from, and its settings' values (a kind read from a setting): worked out once per config version."""
        cached = self._limits.get(platform)
        if cached is None:
            cls = self.settings.registry.get(platform)
            cached = (limits.resolve(self.settings, platform, self._runtime.get(platform)),
                      cls.limit_key_sources() if cls is not None else {},
                      limits.setting_values(self.settings, platform))
            self._limits[platform] = cached
        return cached

    def _limits_changed(self, version: Any, raw: Any) -> None:
        pairs = [raw[i:i + 2] for i in range(0, len(raw or []), 2)]
        _, self._runtime = limits.parse_runtime(dict(pairs))
        self._limits_version = version.decode() if isinstance(version, bytes) else str(version)
        self._limits.clear()

    def _limit_call(self, attempt: Attempt) -> tuple[limits.Limits, list[limits.LimitKey], list[str], list[Any]]:
        """The platform's bucket, the action's keys, and the KEYS and ARGV the admit script takes for them, LAST
        (scripts.ADMIT finds them from the end): the config hash, the waiting index and one key per limit; the
        config version, 5 values per limit, their number."""
        lim, sources, values = self._platform_limits(attempt.platform)
        found = limits.keys_of(lim, sources, attempt.params, values) if lim.rules else []
        tail_keys = [keys.ratelimit_config(), keys.limits_waiting(attempt.platform)]
        tail_args: list[Any] = [self._limits_version or ""]
        for key in found:
            rule = key.rule
            if rule.rate > 0:
                tail_keys.append(keys.key_bucket(attempt.platform, key.kind, key.digest))
                tail_args += ["r", rule.rate, rule.burst, key.kind, key.label]
            if rule.concurrency > 0:
                tail_keys.append(keys.key_leases(attempt.platform, key.kind, key.digest))
                tail_args += ["c", rule.concurrency, "", key.kind, key.label]
        tail_args.append(len(tail_keys) - 2)
        return lim, found, tail_keys, tail_args

    def _settle_tail(self, attempt: Attempt, admission: Admission, outcome: Outcome) -> tuple[list[str], list[Any]]:
        """The settle script's last KEYS and ARGV: the leases to give back; after a 429, the buckets to pause (the
        action's key buckets, or the platform's when it has none)."""
        platform = attempt.platform
        tail_keys, tail_args = [keys.limits_waiting(platform)], []
        held: list[limits.LimitKey] = list(admission.limit_keys)
        for key in held:
            if key.rule.concurrency > 0:
                tail_keys.append(keys.key_leases(platform, key.kind, key.digest))
                tail_args += ["l", key.kind, key.label]
        pause = outcome.pause_s or 0.0
        if pause > 0:
            rated = [k for k in held if k.rule.rate > 0]
            for key in rated:
                tail_keys.append(keys.key_bucket(platform, key.kind, key.digest))
                tail_args += ["p", key.kind, key.label]
            if not rated:
                tail_keys.append(keys.rate_bucket(platform))
                tail_args += ["p", limits.PLATFORM_KIND, ""]
        return tail_keys, [round(pause, 3), *tail_args, len(tail_keys) - 1]

    # ------------------------------------------------------------------------------------------------------------

    def admit(self, attempt: Attempt) -> Admission:
        s = self.settings
        breaker = s.breaker_config(attempt.platform)
        action_keys = keys.action_keys(attempt.platform, attempt.action_id)
        # Twice at most in a row: when this worker's limits are out of date, the script takes nothing and answers
        # with the current ones (a third time only if they changed again in between).
        for _ in range(3):
            lim, found, tail_keys, tail_args = self._limit_call(attempt)
            reply, replicated = self._replicated(
                self._admit, action_keys + tail_keys,
                [attempt.token, s.lease_s, s.idempotency_ttl_s, breaker.open_s, breaker.half_open_max,
                 lim.platform.rate, lim.platform.burst, int(attempt.fail_fast), attempt.attempt, HISTORY_MAX,
                 "" if attempt.expires_at is None else f"{attempt.expires_at:.6f}", *tail_args],
            )
            verdict = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            if verdict != "stale":
                break
            self._limits_changed(reply[1], reply[2])
        else:
            return Admission(verdict=Verdict.RATE_LIMITED, wait_s=0.1)
        detail, probe = reply[1:3]
        reconcile = reply[3] if len(reply) > 3 else 0  # only a `run` says whether to reconcile
        detail = detail.decode() if isinstance(detail, bytes) else detail
        if verdict == Verdict.RUN and not replicated:
            # Taken back on the master; if that is lost in a failover too, the new master never had the claim.
            leases = [keys.key_leases(attempt.platform, k.kind, k.digest) for k in found if k.rule.concurrency > 0]
            self._release(keys=[action_keys[0], action_keys[6], *leases], args=[attempt.token, s.idempotency_ttl_s])
            log.warning("the claim of %s reached fewer than %d replica(s) within %d ms (OPSQ_REDIS_REPLICA_ACKS): "
                        "not calling the platform; trying again shortly", attempt.action_id, self.replica_acks,
                        self.ack_timeout_ms,
                        extra={"action_id": attempt.action_id, "platform": attempt.platform})
            return Admission(verdict=Verdict.UNREPLICATED, wait_s=max(1.0, self.ack_timeout_ms / 1000))
        if verdict == Verdict.RUN:
            return Admission(probe=bool(probe), reconcile=bool(reconcile),
                             since=float(detail) if reconcile and detail else None, limit_keys=tuple(found))
        if verdict == Verdict.DONE:
            return Admission(verdict=Verdict.DONE, result=json.loads(detail or "{}"))
        if verdict == Verdict.FAILED:
            return Admission(verdict=Verdict.FAILED, error=json.loads(detail or "{}"))
        if verdict == Verdict.CANCELLED:
            return Admission(verdict=Verdict.CANCELLED, error=json.loads(detail or "{}"), reconcile=bool(reconcile))
        if verdict == Verdict.EXPIRED:
            return Admission(verdict=Verdict.EXPIRED)
        return Admission(verdict=verdict, wait_s=float(detail))

    def settle(self, attempt: Attempt, admission: Admission, outcome: Outcome) -> str:
        s = self.settings
        breaker = s.breaker_config(attempt.platform)
        if outcome.ok:
            payload = json.dumps(outcome.result, sort_keys=True, default=str)
        else:
            payload = json.dumps({"kind": outcome.error_kind, "message": outcome.error})
        args: list[Any] = [attempt.token, int(outcome.ok), int(outcome.health_failure), int(admission.probe),
                           payload, int(outcome.final), s.idempotency_ttl_s, breaker.failure_threshold,
                           breaker.window_s, HISTORY_MAX, outcome.error_kind or "", int(outcome.ambiguous),
                           keys.outcome_channel(attempt.action_id),
                           f"{attempt.platform}|{attempt.action}|{attempt.role}",
                           *_timing(outcome.call_s), *_timing(outcome.attempt_s), int(outcome.reconciled)]
        tail_keys, tail_args = self._settle_tail(attempt, admission, outcome)
        action_keys = keys.action_keys(attempt.platform, attempt.action_id) + tail_keys
        args += tail_args
        if not outcome.ok:
            # A failure lost in a failover costs no second effect: the claim (replicated at admit) makes the next
            # delivery reconcile, and a final failure is in the database before the message is acknowledged.
            state = self._settle(keys=action_keys, args=args)
        else:
            state, replicated = self._replicated(self._settle, action_keys, args)
            if not replicated:
                raise NotReplicated(f"its record reached fewer than {self.replica_acks} replica(s) within "
                                    f"{self.ack_timeout_ms} ms (OPSQ_REDIS_REPLICA_ACKS)")
        return state.decode() if isinstance(state, bytes) else str(state)
