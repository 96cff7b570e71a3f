"""Rate and concurrency limits per key, fleet-wide (issue 14): which limits an action is under, and its keys.

A platform has its own token bucket (OPSQ_RATE_LIMITS, the executor's default) and may have limits per *kind* of
key: `slack: 1/s per channel, 50/min per token`, `gsheets: 60/min per spreadsheet`, at most 2 actions at once
per channel. The key of an action is read from its params by the kind's name (`channel` -> params["channel"];
an executor's `limit_keys` maps other names: gsheets' `spreadsheet` -> `spreadsheet_id`), else from the
platform's settings (`token` -> OPSQ_SLACK_TOKEN; a param left unset falls back to the setting of that name,
as gsheets' default spreadsheet). An action that has no value for a kind is not under that kind's limit.

Each key is a Redis key named by a hash of its value, never the value: `opsq:rl:slack:token:<sha1[:16]>` holds
no token, and it expires when idle, so the keys a fleet has seen do not pile up. What an operator reads in
`opsq ratelimit status` is a label: the value itself for a param (a channel id is no secret), a hash for a
setting or a secret-named param (a token, a webhook URL).

Where the limits come from: the settings (OPSQ_KEY_LIMITS; defaults), overridden field by field by what
operators set at runtime (`opsq ratelimit set`, the hash keys.ratelimit_config()). The admit script
(workers.guards.scripts.ADMIT) checks every bucket and lease of the action in its one round trip and takes all
or none; this module only says which, and is pure (no Redis): workers.guards.redis_guard calls it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.redaction import URL_KEYS, is_secret_key
from workers.settings import KeyLimitConfig, RateLimitConfig, Settings

#: How `opsq ratelimit status` and the metrics name the platform's own bucket among the kinds of key.
PLATFORM_KIND = "platform"
#: Where a limit's values come from (a runtime entry overrides only the fields it sets).
DEFAULT, ENV, RUNTIME = "default", "env", "runtime"
LABEL_MAX = 64


@dataclass(frozen=True)
class Rule:
    """The limits in effect for one kind of key of a platform: a bucket (`rate` > 0) and/or leases
    (`concurrency` > 0)."""

    kind: str
    rate: float = 0.0
    burst: int = 1
    concurrency: int = 0
    source: str = ENV

    @property
    def active(self) -> bool:
        return self.rate > 0 or self.concurrency > 0


@dataclass(frozen=True)
class Limits:
    """A platform's limits: its own bucket, and the rules per kind of key (only the active ones)."""

    platform: RateLimitConfig
    platform_source: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class LimitKey:
    """One of an action's keys under one rule: what the admit script checks and takes, and settle gives back."""

    kind: str
    label: str
    digest: str
    rule: Rule


def parse_runtime(raw: Mapping[Any, Any]) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    """The runtime config hash (keys.ratelimit_config: `version` and one JSON field per platform) as
    (version, {platform: {kind: fields}}); kind "" is the platform's own bucket. A field that does not parse is
    skipped: one bad entry must not stop every admission."""
    version = "0"
    config: dict[str, dict[str, dict[str, Any]]] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        text = v.decode() if isinstance(v, bytes) else str(v)
        if name == "version":
            version = text
            continue
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if isinstance(entry, dict):
            config[name] = {str(kind): fields for kind, fields in entry.items() if isinstance(fields, dict)}
    return version, config


def resolve(settings: Settings, platform: str, runtime: Mapping[str, Mapping[str, Any]] | None = None) -> Limits:
    """The limits in effect for `platform`: the settings' (OPSQ_RATE_LIMITS, OPSQ_KEY_LIMITS, the executor's
    default bucket) with the operators' runtime entries over them, field by field."""
    runtime = runtime or {}
    base = settings.rate_limit(platform)
    platform_source = ENV if platform in settings.rate_limits else DEFAULT
    own = runtime.get("")
    if own:
        fields = {k: own[k] for k in ("rate", "burst") if own.get(k) is not None}
        if fields:
            base = RateLimitConfig(**{**base.model_dump(), **fields})
            platform_source = RUNTIME
    rules: list[Rule] = []
    env = settings.key_limits.get(platform, {})
    for kind in sorted(set(env) | {k for k in runtime if k}):
        merged = env[kind].model_dump(exclude_none=True) if kind in env else {}
        source = ENV
        overrides = {k: v for k, v in (runtime.get(kind) or {}).items() if v is not None}
        if overrides:
            merged.update(overrides)
            source = RUNTIME
        try:
            limit = KeyLimitConfig.model_validate(merged)
        except ValueError:
            continue
        rule = Rule(kind=kind, rate=limit.rate or 0.0, burst=limit.burst or 1, concurrency=limit.concurrency or 0,
                    source=source)
        if rule.active:
            rules.append(rule)
    return Limits(platform=base, platform_source=platform_source, rules=tuple(rules))


def digest(value: str) -> str:
    """What a key's Redis name holds instead of its value: 64 bits of its SHA-1, enough that two channels of a
    workspace never share a bucket, and a token cannot be read back from it."""
    return hashlib.sha1(value.encode()).hexdigest()[:16]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def key_of(kind: str, source: str, params: Mapping[str, Any] | None, setting_values: Mapping[str, str | None]
           ) -> tuple[str, str] | None:
    """(digest, label) of the action's key of this kind, or None when it has none (it is not under the limit).
    From the params first, else the platform's setting of that name; a setting's value, or a secret-named
    param's, is labelled by its hash only."""
    value = (params or {}).get(source)
    secret = is_secret_key(source) or source in URL_KEYS
    if value is None or value == "":
        value = setting_values.get(source)
        secret = True
    if value is None or value == "":
        return None
    text = _text(value)
    key = digest(text)
    if secret:
        return key, f"sha1:{key[:8]}"
    return key, text if len(text) <= LABEL_MAX else text[:LABEL_MAX - 1] + "…"


def keys_of(limits: Limits, sources: Mapping[str, str], params: Mapping[str, Any] | None,
            setting_values: Mapping[str, str | None]) -> list[LimitKey]:
    """The action's keys under each of the platform's rules (`sources`: kind -> param or setting name,
    Executor.limit_key_sources)."""
    found = []
    for rule in limits.rules:
        key = key_of(rule.kind, sources.get(rule.kind, rule.kind), params, setting_values)
        if key is not None:
            found.append(LimitKey(kind=rule.kind, label=key[1], digest=key[0], rule=rule))
    return found


def setting_values(settings: Settings, platform: str) -> dict[str, str | None]:
    """What a kind may be read from when the params do not have it: the token and the platform's settings."""
    own = settings.platform(platform)
    return {**own.extra, "token": own.token}
