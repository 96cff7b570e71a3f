"""The guards' Redis client: the broker's Redis, one connection pool per process.

Every Redis client opsqueue builds itself (the guards, queue operations, beat's leader lock, health) comes
from `guard_redis`, so each works with whatever OPSQ_REDIS_URL names: one server (`redis://`, `rediss://`)
or a replicated one behind Redis Sentinel (`sentinel://`; workers.dev.broker_url). With Sentinel the
client asks the Sentinels where the master is when it connects, and again whenever a connection to the
master fails, so after a failover the next command (redis-py retries a failed one) reaches the new master.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.sentinel import Sentinel

from workers.dev.broker_url import RedisTarget, redis_target
from workers.settings import Settings, get_settings

# The guards' client waits this long for Redis: an attempt must hear "Redis is gone" in seconds.
SOCKET_TIMEOUT_S = 5
# Connections per process in the pool of `guard_redis` (redis-py's default).
MAX_CONNECTIONS = 100
# A Sentinel answers from memory: one that takes longer than this is as good as down, try the next.
SENTINEL_TIMEOUT_S = 2

# A Sentinel's flags for a server it thinks is down (or cannot talk to).
DOWN_FLAGS = frozenset({"s_down", "o_down", "disconnected"})

_client: tuple[int, str, redis.Redis] | None = None


def as_text(value: bytes | str) -> str:
    """A reply from the guards' client (bytes: it does not decode responses) as text. redis-py types
    replies as bytes or str, whichever the client was built with."""
    return value.decode() if isinstance(value, bytes) else value


def server_time(client: redis.Redis) -> float:
    """Redis' clock, the one the guards' scripts use: comparing against it, not a worker's clock,
    keeps leases and breaker timings consistent across hosts."""
    sec, usec = client.time()
    return sec + usec / 1_000_000


def guard_redis(settings: Settings | None = None) -> redis.Redis:
    global _client
    target = redis_target(settings or get_settings())
    # Keyed by PID: a forked pool process builds its own pool (and its own Sentinel connections) rather
    # than share the parent's sockets.
    key = f"{target.url}#{target.master}#{target.sentinel_password}#{target.ssl}"
    if _client is None or _client[0] != os.getpid() or _client[1] != key:
        _client = (os.getpid(), key, make_client(target))
    return _client[2]


def make_client(target: RedisTarget, **overrides: Any) -> redis.Redis:
    """A new client (with its own pool) for `target`; `overrides` replace the connection options."""
    options: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": SOCKET_TIMEOUT_S,
                               "health_check_interval": 30, **overrides}
    if not target.is_sentinel:
        # Blocking: a service with more threads than connections (a thousand waiters) has them wait their
        # turn for a connection, where redis-py's default pool raises "Too many connections" at the 101st.
        pool = redis.BlockingConnectionPool.from_url(target.url, max_connections=MAX_CONNECTIONS,
                                                     timeout=SOCKET_TIMEOUT_S, **(target.ssl or {}), **options)
        return redis.Redis(connection_pool=pool)
    assert target.master is not None  # parse_redis_url refuses a sentinel:// URL without one
    master_options = {k: v for k, v in (("username", target.username), ("password", target.password)) if v}
    # redis-py has no blocking pool for Sentinel: a larger one instead.
    client: redis.Redis = sentinels(target).master_for(target.master, db=target.db,
                                                       max_connections=10 * MAX_CONNECTIONS, **master_options,
                                                       **options)
    return client


def sentinels(target: RedisTarget) -> Sentinel:
    return Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs(target))


def sentinel_kwargs(target: RedisTarget) -> dict[str, Any]:
    """How to talk to the Sentinels themselves (not to the master): their own password, short timeouts.
    Also what kombu and Celery get as `sentinel_kwargs` (workers.celery_app)."""
    out: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    if target.sentinel_password:
        out["password"] = target.sentinel_password
    return out


@dataclass
class SentinelView:
    """What one Sentinel says about the master (for `opsq health`)."""

    sentinel: str
    reachable: bool
    master: str | None = None  # host:port
    flags: str = ""
    replicas: int = 0  # known to the Sentinel, whether up or not (a dead old master stays listed)
    replicas_up: int = 0  # not down: what a failover could promote
    other_sentinels: int = 0
    quorum: int = 0
    error: str | None = field(default=None)


def sentinel_views(target: RedisTarget) -> list[SentinelView]:
    """Each configured Sentinel's view of the master: reachable or not, which address it gives, its flags
    (`s_down`, `o_down` mean it thinks the master is down)."""
    out = []
    for host, port in target.sentinels:
        name = f"{host}:{port}"
        client = redis.Redis(host=host, port=port, **sentinel_kwargs(target))
        try:
            info = client.sentinel_master(target.master)
            replicas = client.sentinel_slaves(target.master)
            assert isinstance(info, dict) and isinstance(replicas, list)
            # By its flags only: a Sentinel refreshes a replica's own INFO (its link status) every 10 s.
            up = [r for r in replicas if not DOWN_FLAGS & set(str(r.get("flags", "")).split(","))]
            out.append(SentinelView(name, True, master=f"{info['ip']}:{info['port']}", flags=str(info.get("flags", "")),
                                    replicas=int(info.get("num-slaves", 0)), replicas_up=len(up),
                                    other_sentinels=int(info.get("num-other-sentinels", 0)),
                                    quorum=int(info.get("quorum", 0))))
        except redis.RedisError as exc:
            out.append(SentinelView(name, False, error=" ".join(str(exc).split())))
        finally:
            client.close()
    return out
