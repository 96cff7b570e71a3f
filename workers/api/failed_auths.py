"""The failed-authentication limit of the HTTP API: past `OPSQ_API_AUTH_FAILURES_PER_MIN` failed authentications
from one client address within a minute, that address is refused (429, with Retry-After) until the minute is over,
so tokens cannot be guessed at the speed of the server.

Counted in Redis (a fixed one-minute window per address: SET NX EX then INCR, in one MULTI, so a key never lives
without its expiry), so every `opsq api` process on the same Redis shares the count, and a restart forgets nothing.
Keyed by address only: adding the presented token (or its prefix) to the key would give a guesser a fresh budget per
guess, which is the opposite of the point. An IPv6 address is counted by its /64 (client_key): one host is
commonly given a whole /64, so counting each address would give it 2^64 budgets."""

from __future__ import annotations

import ipaddress
import logging
import math
import time

import redis

from workers.guards import keys
from workers.guards.connection import guard_redis
from workers.settings import get_settings

log = logging.getLogger("opsq.api.auth")

WINDOW_S = 60
# After Redis failed to answer, it is not asked again for this long: a Redis that does not answer at all (not even
# a refusal) costs its client's timeouts and retries, which every request would pay on top of its own work.
QUIET_AFTER_FAILURE_S = 5.0

_redis_was_down = False
_quiet_until = 0.0


def client_key(host: str) -> str:
    """What the limit counts a client by: its IPv4 address, or its IPv6 address's /64 (`2001:db8:1:2::/64`); an
    IPv4-mapped IPv6 address is its IPv4 address. Anything else (not an address) as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def retry_after(address: str) -> int | None:
    """Seconds until `address` may try again, or None if it is under the limit."""
    if time.monotonic() < _quiet_until:
        return None
    try:
        pipe = guard_redis().pipeline(transaction=False)
        pipe.get(keys.api_auth_failures(address))
        pipe.pttl(keys.api_auth_failures(address))
        count, ttl_ms = pipe.execute()
    except redis.RedisError as exc:
        _down(exc)
        return None
    _up()
    if count is None or int(count) < get_settings().api_auth_failures_per_min:
        return None
    return max(1, math.ceil(ttl_ms / 1000)) if ttl_ms > 0 else WINDOW_S


def failed(address: str) -> None:
    """Count one failed authentication from `address` in its current window."""
    key = keys.api_auth_failures(address)
    if time.monotonic() < _quiet_until:
        return
    try:
        pipe = guard_redis().pipeline(transaction=True)
        pipe.set(key, 0, ex=WINDOW_S, nx=True)  # the window starts at its first failure
        pipe.incr(key)  # INCR keeps the expiry SET gave
        pipe.execute()
    except redis.RedisError as exc:
        _down(exc)
        return
    _up()


# Redis down: the limiter fails OPEN (nothing is counted, nobody is refused by it). A token is 256 random bits
# (workers.store.api_tokens), so the limit is a brake on noise and abuse, not what keeps a token from being guessed;
# failing closed would turn a Redis outage into a refusal of every request, including the reads that need only the
# database. The requests that need Redis for their own work still get their 503 from it. Logged once per outage.

def _down(exc: redis.RedisError) -> None:
    global _redis_was_down, _quiet_until
    _quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
    if not _redis_was_down:
        _redis_was_down = True
        log.warning("Redis unreachable: failed authentications are not counted until it is back (%s)",
                    type(exc).__name__)


def _up() -> None:
    global _redis_was_down
    if _redis_was_down:
        _redis_was_down = False
        log.warning("Redis is back: failed authentications are counted again")
