"""Operator views and actions on the circuit breakers (the transitions themselves live in the Lua)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from workers.guards import keys, scripts
from workers.guards.base import BreakerState
from workers.guards.connection import guard_redis
from workers.guards.redis_guard import HISTORY_MAX
from workers.queues import PLATFORM_QUEUES
from workers.settings import get_settings
from workers.store import audit


@dataclass(frozen=True)
class BreakerStatus:
    platform: str
    state: str
    failures_in_window: int
    failure_threshold: int
    window_s: float
    open_s: float
    half_open_max: int
    probes_in_flight: int
    forced_open: bool
    opened_at: float | None
    seconds_until_half_open: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_platform(platform: str) -> str:
    if platform not in PLATFORM_QUEUES:
        raise ValueError(f"unknown platform {platform!r} (known: {', '.join(PLATFORM_QUEUES)})")
    return platform


def status(platform: str, client: redis.Redis | None = None) -> BreakerStatus:
    r = client or guard_redis()
    cfg = get_settings().breaker_config(check_platform(platform))
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.breaker(platform))
    pipe.time()
    raw, (sec, usec) = pipe.execute()
    now = float(sec) + usec / 1_000_000
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    state = fields.get("state", BreakerState.CLOSED)
    pipe = r.pipeline(transaction=False)
    pipe.zcount(keys.breaker_failures(platform), now - cfg.window_s, "+inf")
    pipe.zcount(keys.breaker_probes(platform), now, "+inf")  # live leases only: a dead worker's has run out
    fails, probes = pipe.execute()
    if state != BreakerState.CLOSED:
        fails = 0
    opened_at = float(fields["opened_at"]) if "opened_at" in fields else None
    forced = fields.get("forced") == "1"
    until = None
    if state == BreakerState.OPEN and opened_at is not None and not forced:
        until = max(0.0, opened_at + cfg.open_s - now)
    return BreakerStatus(platform=platform, state=state, failures_in_window=int(fails),
                         failure_threshold=cfg.failure_threshold, window_s=cfg.window_s, open_s=cfg.open_s,
                         half_open_max=cfg.half_open_max, probes_in_flight=int(probes),
                         forced_open=forced, opened_at=opened_at, seconds_until_half_open=until)


def _force(platform: str, to: str, reason: str, client: redis.Redis | None) -> str:
    r = client or guard_redis()
    check_platform(platform)
    previous = r.register_script(scripts.FORCE)(
        keys=[keys.breaker(platform), keys.breaker_failures(platform), keys.breaker_history(platform),
              keys.breaker_probes(platform)],
        args=[to, reason, HISTORY_MAX])
    return previous.decode() if isinstance(previous, bytes) else str(previous)


def reset(platform: str, actor: str, reason: str = "", client: redis.Redis | None = None,
          audited: bool = True) -> str:
    """Back to CLOSED (failures forgotten), recorded in the history and the audit trail with who and why."""
    return _force_by(platform, BreakerState.CLOSED, "reset", "circuit_reset", actor, reason, client, audited)


def force_open(platform: str, actor: str, reason: str = "", client: redis.Redis | None = None,
               audited: bool = True) -> str:
    """OPEN until reset: actions wait (or fail fast) and the platform is not called."""
    return _force_by(platform, BreakerState.OPEN, "forced open", "circuit_open", actor, reason, client, audited)


def _force_by(platform: str, to: str, verb: str, audit_action: str, actor: str, reason: str,
              client: redis.Redis | None, audited: bool) -> str:
    why = f"{verb} by {actor}" + (f": {reason}" if reason else "")
    if not audited:
        return _force(platform, to, why, client)
    r = client or guard_redis()
    check_platform(platform)

    def change() -> tuple[str, dict[str, tuple[bytes | None, int]]]:
        before = _snapshot(r, platform)
        return _force(platform, to, why, r), before

    def undo(done: tuple[str, dict[str, tuple[bytes | None, int]]]) -> None:
        _restore(r, platform, done[1], to, done[0], f"{verb} undone: it could not be recorded in the audit trail")

    # Audited, or not done (workers.store.audit.audited_change): a breaker forced open in an incident with
    # no entry saying who did it would be the trail missing what happened.
    previous, _ = audit.audited_change(
        change, lambda done: (audit_action, f"platform:{platform}", {"from": done[0], "reason": reason}), undo,
        subject=f"circuit {platform}", verb=verb, actor=actor)
    return previous


def _state_keys(platform: str) -> list[str]:
    """The keys FORCE changes, but its history (the undo adds to the history, it does not rewrite it)."""
    return [keys.breaker(platform), keys.breaker_failures(platform), keys.breaker_probes(platform)]


def _snapshot(r: redis.Redis, platform: str) -> dict[str, tuple[bytes | None, int]]:
    pipe = r.pipeline(transaction=True)
    for key in _state_keys(platform):
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute()
    return {key: (replies[2 * n], int(replies[2 * n + 1])) for n, key in enumerate(_state_keys(platform))}


def _restore(r: redis.Redis, platform: str, snapshot: dict[str, tuple[bytes | None, int]], forced: str,
             previous: str, why: str) -> None:
    pipe = r.pipeline(transaction=True)
    for key, (blob, pttl) in snapshot.items():
        if blob is None:
            pipe.delete(key)
        else:
            pipe.restore(key, max(pttl, 0), blob, replace=True)
    pipe.lpush(keys.breaker_history(platform), json.dumps({"at": f"{time.time():.6f}", "from": forced,
                                                           "to": previous, "reason": why}))
    pipe.execute()


def history(platform: str | None = None, limit: int = 50, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    r = client or guard_redis()
    platforms = [check_platform(platform)] if platform else list(PLATFORM_QUEUES)
    pipe = r.pipeline(transaction=False)
    for p in platforms:
        pipe.lrange(keys.breaker_history(p), 0, limit - 1)
    entries = []
    for p, items in zip(platforms, pipe.execute(), strict=True):
        for item in items:
            entry = json.loads(item)
            entry["platform"] = p
            entry["at"] = float(entry["at"])
            entries.append(entry)
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:limit]


def format_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z" if ts else "-"
