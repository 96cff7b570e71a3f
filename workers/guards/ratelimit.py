"""Operator view and changes of the rate and concurrency limits (the buckets and leases live in the admit script).

`status` reads what is in effect (the settings with the operators' runtime entries over them) and every key that
is waiting now; `set_limit` / `unset_limit` change the runtime entries (the hash keys.ratelimit_config), audited.
Workers need no restart: the admit script sees the config's version change and hands them the new limits
(workers.guards.redis_guard), at their next admission.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from workers.guards import keys, limits
from workers.guards.breaker import check_platform
from workers.guards.connection import as_text, guard_redis
from workers.settings import KeyLimitConfig, Settings, get_settings
from workers.store import audit


def runtime_config(client: redis.Redis | None = None) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    """(version, {platform: {kind: fields}}) as operators set them; kind "" is the platform's own bucket."""
    return limits.parse_runtime((client or guard_redis()).hgetall(keys.ratelimit_config()))


def in_effect(platform: str, client: redis.Redis | None = None) -> limits.Limits:
    _, runtime = runtime_config(client)
    return limits.resolve(get_settings(), check_platform(platform), runtime.get(platform))


def _bucket_tokens(raw: list[Any], rate: float, burst: int, now: float) -> float:
    tokens, ts = raw[0], raw[1]
    if tokens is None:
        return float(burst)
    return min(float(burst), float(tokens) + max(0.0, now - float(ts or now)) * rate)


def status(platform: str, client: redis.Redis | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The platform's bucket and per-key limits in effect, where each comes from, and every key waiting now."""
    r = client or guard_redis()
    check_platform(platform)
    _, runtime = runtime_config(r)
    lim = limits.resolve(settings or get_settings(), platform, runtime.get(platform))
    limit = lim.platform
    pipe = r.pipeline(transaction=False)
    pipe.hmget(keys.rate_bucket(platform), "tokens", "ts", "paused_until")
    pipe.hgetall(keys.stats(platform))
    pipe.time()
    bucket, raw_stats, (sec, usec) = pipe.execute()
    now = float(sec) + usec / 1_000_000
    stats = {as_text(k): int(v) for k, v in raw_stats.items()}
    available = _bucket_tokens(bucket, limit.rate, limit.burst, now) if limit.rate > 0 else None
    paused_until = float(bucket[2] or 0)
    return {"platform": platform, "rate_per_s": limit.rate, "burst": limit.burst,
            "unlimited": limit.rate == 0, "tokens_available": available,
            "waits_total": stats.get("rate_waits", 0), "concurrency_waits_total": stats.get("concurrency_waits", 0),
            "paused_for_s": round(paused_until - now, 3) if paused_until > now else None,
            "source": lim.platform_source,
            "limits": [{"per": rule.kind, "rate_per_s": rule.rate or None, "burst": rule.burst if rule.rate else None,
                        "concurrency": rule.concurrency or None, "source": rule.source} for rule in lim.rules],
            "waiting": waiting_keys(platform, lim, now, r)}


def waiting_keys(platform: str, lim: limits.Limits, now: float, client: redis.Redis) -> list[dict[str, Any]]:
    """Each key that made an action wait and is still waiting (no token yet, paused after a 429, or at its
    concurrency limit): its kind, its label (the value, or a hash for a secret), why and for how long. From the
    waiting index the admit and settle scripts keep (keys.limits_waiting), so it costs no scan of Redis."""
    members: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
        keys.limits_waiting(platform), now, "+inf", withscores=True)
    rules = {rule.kind: rule for rule in lim.rules}
    entries: list[tuple[str, str, str]] = []  # key, kind, label
    for member, _until in members:
        key, kind, label = as_text(member).split("|", 2)
        entries.append((key, kind, label))
    pipe = client.pipeline(transaction=False)
    for key, _, _ in entries:
        if key.startswith(f"{keys.PREFIX}:cc:"):
            pipe.zcount(key, now, "+inf")
        else:
            pipe.hmget(key, "tokens", "ts", "paused_until")
    found = []
    for (_, kind, label), raw in zip(entries, pipe.execute(), strict=True):
        rule = rules.get(kind)
        item: dict[str, Any] = {"per": kind, "key": label}
        if isinstance(raw, int):
            item.update(state="concurrency", running=raw, concurrency=rule.concurrency if rule else None,
                        for_s=None)
            if rule is not None and raw < rule.concurrency:
                continue  # a lease was given back since: not waiting any more
        else:
            paused = float(raw[2] or 0)
            tokens = _bucket_tokens(raw, rule.rate, rule.burst, now) if rule is not None and rule.rate > 0 else None
            if paused > now:
                item.update(state="paused", for_s=round(paused - now, 3), tokens=tokens)
            elif tokens is not None and tokens < 1:
                item.update(state="waiting", for_s=round((1 - tokens) / rule.rate, 3) if rule else None,
                            tokens=tokens)
            else:
                continue  # it has a token again
        found.append(item)
    found.sort(key=lambda i: (i["per"], i["key"]))
    return found


def _kind(platform: str, per: str | None) -> str:
    if per is None:
        return ""
    cls = get_settings().registry.get(platform)
    known = cls.limit_key_sources() if cls is not None else {}
    if per not in known:
        raise ValueError(f"{platform} has no key kind {per!r} (known: {', '.join(sorted(known))})")
    return per


def _write(r: redis.Redis, platform: str, entry: dict[str, dict[str, Any]] | None) -> None:
    """The platform's runtime entry (None: none) and a new version, together: a worker that sees the version
    sees the entry."""
    pipe = r.pipeline(transaction=True)
    if entry:
        pipe.hset(keys.ratelimit_config(), platform, json.dumps(entry, sort_keys=True))
    else:
        pipe.hdel(keys.ratelimit_config(), platform)
    pipe.hincrby(keys.ratelimit_config(), "version", 1)
    pipe.execute()


def _change(r: redis.Redis, platform: str, edit: Any) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Read-modify-write of the platform's runtime entry under WATCH: two operators at once lose neither change.
    Returns (the entry before, as stored; the entry after)."""
    config = keys.ratelimit_config()
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(config)
                before = pipe.hget(config, platform)
                entry: dict[str, dict[str, Any]] = json.loads(before) if before else {}
                after = edit(entry)
                pipe.multi()
                if after:
                    pipe.hset(config, platform, json.dumps(after, sort_keys=True))
                else:
                    pipe.hdel(config, platform)
                pipe.hincrby(config, "version", 1)
                pipe.execute()
                return (as_text(before) if before else None), after
            except redis.WatchError:
                continue


def set_limit(platform: str, per: str | None, *, rate: float | None = None, burst: int | None = None,
              concurrency: int | None = None, actor: str, reason: str = "",
              client: redis.Redis | None = None) -> dict[str, Any]:
    """Sets the given fields of the platform's limit (per None: its own bucket; else per key of that kind) for
    every worker, now; the others stay as they were (the settings', or an earlier runtime change). rate 0 turns
    the bucket off, concurrency 0 the lease limit. Audited, or not done. Returns the limit's runtime fields."""
    check_platform(platform)
    kind = _kind(platform, per)
    fields = {k: v for k, v in (("rate", rate), ("burst", burst), ("concurrency", concurrency)) if v is not None}
    if not fields:
        raise ValueError("nothing to set: give a rate, a burst or a concurrency")
    if concurrency is not None and not kind:
        raise ValueError("a concurrency limit is per key: name the kind of key (--per channel)")
    KeyLimitConfig.model_validate(fields)  # the ranges: rate >= 0, burst >= 1, concurrency >= 0
    r = client or guard_redis()

    def edit(entry: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {**entry, kind: {**entry.get(kind, {}), **fields}}

    _, after = audit.audited_change(
        lambda: _change(r, platform, edit),
        lambda done: ("ratelimit_set", f"platform:{platform}", {"per": per, **fields, "reason": reason}),
        lambda done: _write(r, platform, json.loads(done[0]) if done[0] else None),
        subject=f"rate limit {platform}" + (f" per {per}" if per else ""), verb="set", actor=actor)
    return after[kind]


def unset_limit(platform: str, per: str | None, *, every: bool = False, actor: str, reason: str = "",
                client: redis.Redis | None = None) -> bool:
    """Drops the runtime change of the platform's limit (per None: its own bucket; `every`: all of the platform's),
    so the settings' values apply again. Audited. False when there was none."""
    check_platform(platform)
    kind = "" if every else _kind(platform, per)
    r = client or guard_redis()
    _, runtime = runtime_config(r)
    current = runtime.get(platform, {})
    if not current or (not every and kind not in current):
        return False

    def edit(entry: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {} if every else {k: v for k, v in entry.items() if k != kind}

    audit.audited_change(
        lambda: _change(r, platform, edit),
        lambda done: ("ratelimit_unset", f"platform:{platform}",
                      {"per": "*" if every else per, "was": json.loads(done[0]) if done[0] else None,
                       "reason": reason}),
        lambda done: _write(r, platform, json.loads(done[0]) if done[0] else None),
        subject=f"rate limit {platform}" + (f" per {per}" if per else ""), verb="unset", actor=actor)
    return True
