"""`opsq health`, `opsq validate-env`, `opsq test-auth`: is everything there and configured right?"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from executors.errors import ExecutorError
from executors.registry import EXECUTORS, TOKEN_PLATFORMS
from executors.urlguard import AddressGuard, WebhookProxy, addresses_of, refusal
from workers.celery_app import app as celery_app
from workers.client import redis_cause
from workers.dev.broker_url import redact_redis_url, redis_target
from workers.errors import OpsqError
from workers.executor_pool import executor
from workers.guards import breaker
from workers.guards.base import BreakerState
from workers.guards.connection import guard_redis, sentinel_views
from workers.ops.queue_ops import paused_queues
from workers.queues import CONTROL_QUEUE, MAINTENANCE_QUEUE, PLATFORM_QUEUES
from workers.settings import Settings, get_settings
from workers.store.db import HEAD_REVISION, current_revision, make_engine

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _redis(settings: Settings) -> Check:
    try:
        start = time.perf_counter()
        guard_redis(settings).ping()
        return Check("redis", OK, f"answers in {(time.perf_counter() - start) * 1000:.1f} ms")
    except Exception as exc:
        return Check("redis", FAIL, redis_cause(exc))


#: A broker must never evict: an evicted key is a lost message, a lost unacked record or a guard's state.
SAFE_POLICY = "noeviction"
REDIS_MEMORY = "redis memory"
# Redis refuses a write while used_memory is above maxmemory; a reading a little below it (a client's buffers
# freed since) is the same state: the next few writes fill it again.
FULL_RATIO = 0.98


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns


def redis_memory_check(info: dict[str, Any], warn_ratio: float) -> Check:
    """What `INFO memory` means for a broker: full (every write refused: submits, acks, results, the
    guards), above `warn_ratio` of maxmemory, or a maxmemory-policy that evicts keys. Pure: health and the
    alert rule (beat.alerts) both use it."""
    used = int(info.get("used_memory", 0))
    limit = int(info.get("maxmemory", 0))
    policy = str(info.get("maxmemory_policy", SAFE_POLICY))
    evicts = policy != SAFE_POLICY
    if limit <= 0:
        detail = f"{_size(used)} used, no maxmemory set (Redis grows until the host runs out)"
        if evicts:
            return Check(REDIS_MEMORY, WARN, f"{detail}; maxmemory-policy {policy} would evict keys, and with "
                                             f"them messages, once a maxmemory is set: use {SAFE_POLICY}")
        return Check(REDIS_MEMORY, OK, detail)
    ratio = used / limit
    where = f"{_size(used)} used of maxmemory {_size(limit)} ({ratio:.0%}), policy {policy}"
    if evicts:
        return Check(REDIS_MEMORY, FAIL, f"{where}: this policy evicts keys when full, and an evicted key is a lost "
                                         f"message, unacked record or guard state; set maxmemory-policy "
                                         f"{SAFE_POLICY} (docs/RUNBOOK.md, Redis memory)")
    if ratio >= FULL_RATIO:
        return Check(REDIS_MEMORY, FAIL, f"Redis is out of memory: {where}: every write is refused (submits, the "
                                         "workers' acks and results, the guards); raise maxmemory or free "
                                         "memory (docs/RUNBOOK.md, Redis memory)")
    if ratio >= warn_ratio:
        return Check(REDIS_MEMORY, WARN, f"{where}: above OPSQ_REDIS_MEMORY_WARN_RATIO ({warn_ratio:.0%}); when "
                                         "full every write is refused (docs/RUNBOOK.md, Redis memory)")
    return Check(REDIS_MEMORY, OK, where)


def redis_memory(settings: Settings | None = None) -> Check:
    """INFO is answered even by a full Redis."""
    settings = settings or get_settings()
    try:
        info = guard_redis(settings).info("memory")
    except Exception as exc:
        return Check(REDIS_MEMORY, FAIL, f"cannot read INFO memory: {redis_cause(exc)}")
    return redis_memory_check(info, settings.redis_memory_warn_ratio)


def _sentinel(settings: Settings) -> Check | None:
    """With a sentinel:// URL: the master the Sentinels name and how many of them answer. A failover needs a
    quorum of them and a replica; a Sentinel that is down or a master they think is down is a warning."""
    try:
        target = redis_target(settings)
    except OpsqError:
        return None  # the redis check says why
    if not target.is_sentinel:
        return None
    views = sentinel_views(target)
    up = [v for v in views if v.reachable]
    masters = sorted({v.master or "?" for v in up})
    detail = f"master {target.master} at {' / '.join(masters) or 'unknown'}; {len(up)}/{len(views)} sentinels answer"
    if up:
        detail += f"; {up[0].replicas_up} of {up[0].replicas} replica(s) up, quorum {up[0].quorum}"
    down = [f"{v.sentinel}: {v.error}" for v in views if not v.reachable]
    if down:
        detail += f" (no answer from {'; '.join(down)})"
    flags = sorted({f for v in up for f in v.flags.split(",") if f in ("s_down", "o_down", "failover_in_progress")})
    if flags:
        detail += f"; flags {','.join(flags)}"
    if not up:
        return Check("redis sentinel", FAIL, detail)
    # No replica up: the next failure of the master cannot fail over.
    warn = down or flags or len(masters) > 1 or up[0].replicas_up == 0 or len(up) < up[0].quorum
    return Check("redis sentinel", WARN if warn else OK, detail)


REDIS_REPLICAS = "redis replicas"


def replicas_check(info: dict[str, Any], wanted: int) -> Check:
    """From the master's INFO replication: do enough replicas keep up for OPSQ_REDIS_REPLICA_ACKS? A replica
    acknowledges every second, so a `lag` above 1 s means it has fallen behind (or stopped)."""
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    keeping_up = [r for r in replicas if r.get("state") == "online" and int(r.get("lag", 99)) <= 1]
    detail = (f"{len(keeping_up)} of {len(replicas)} replica(s) online and keeping up; OPSQ_REDIS_REPLICA_ACKS "
              f"wants {wanted}")
    if len(keeping_up) < wanted:
        return Check(REDIS_REPLICAS, FAIL, f"{detail}: actions wait instead of calling their platform until one "
                                           f"does (or set OPSQ_REDIS_REPLICA_ACKS=0 and accept the failover window)")
    return Check(REDIS_REPLICAS, OK, detail)


def _replicas(settings: Settings) -> Check | None:
    if not settings.redis_replica_acks:
        return None
    try:
        info = guard_redis(settings).info("replication")
    except Exception as exc:
        return Check(REDIS_REPLICAS, FAIL, f"cannot read INFO replication: {redis_cause(exc)}")
    return replicas_check(info, settings.redis_replica_acks)


def _database(settings: Settings) -> Check:
    engine = make_engine(settings.resolved_database_url)
    name = engine.url.render_as_string(hide_password=True)
    try:
        rev = current_revision(engine)
    except Exception as exc:
        return Check("database", FAIL, f"{name}: {str(getattr(exc, 'orig', exc)).splitlines()[0]}")
    finally:
        engine.dispose()
    if rev is not None and rev > HEAD_REVISION:
        # A newer opsq migrated it (a rolling upgrade): this one still reads and writes it (migrations only add),
        # as its read commands do; the host is behind.
        return Check("database", WARN, f"{name}: schema at {rev}, newer than this opsq's {HEAD_REVISION} (a rolling "
                                       "upgrade: upgrade opsqueue on this host)")
    if rev != HEAD_REVISION:
        return Check("database", FAIL, f"{name}: schema at {rev or 'nothing'}, needs {HEAD_REVISION} (opsq db upgrade)")
    return Check("database", OK, f"{name} at revision {rev}")


def _workers(app: Any) -> list[Check]:
    try:
        replies = app.control.inspect(timeout=1.5).active_queues() or {}
    except Exception as exc:
        return [Check("workers", FAIL, f"cannot ask the workers: {exc}")]
    if not replies:
        return [Check("workers", FAIL, "no worker answered (start one: opsq worker)")]
    checks = [Check("workers", OK, "; ".join(f"{w}: {', '.join(sorted(q['name'] for q in qs))}"
                                             for w, qs in sorted(replies.items())))]
    consumed = {q["name"] for qs in replies.values() for q in qs}
    paused = set(paused_queues())
    settings = get_settings()
    # A platform not in OPSQ_PLATFORMS needs no consumer: its actions are refused at submit.
    used = [q for q in PLATFORM_QUEUES if settings.uses(q) or q in consumed]
    for queue in (*used, CONTROL_QUEUE, MAINTENANCE_QUEUE):
        if queue in paused:
            checks.append(Check(f"queue {queue}", WARN, "paused (opsq queue resume " + queue + ")"))
        elif queue not in consumed:
            why = {CONTROL_QUEUE: ": workflows cannot finish, pause or roll back",
                   MAINTENANCE_QUEUE: ": beat's jobs (alerts, stuck detection, backups) do not run"}.get(queue, "")
            checks.append(Check(f"queue {queue}", WARN, f"no worker consumes it{why}"))
    return checks


def _breakers() -> list[Check]:
    out = []
    for platform in PLATFORM_QUEUES:
        s = breaker.status(platform)
        if s.state != BreakerState.CLOSED:
            why = "forced open" if s.forced_open else f"half-open in {s.seconds_until_half_open or 0:.0f}s"
            out.append(Check(f"breaker {platform}", WARN, f"{s.state} ({why}); see opsq circuit history {platform}"))
    return out or [Check("breakers", OK, "all closed")]


def _flower(settings: Settings) -> Check | None:
    if not settings.flower_url:
        return None

    try:
        r = httpx.get(settings.flower_url.rstrip("/") + "/healthcheck", timeout=3)
        return Check("flower", OK if r.status_code < 500 else WARN, f"{settings.flower_url} answered {r.status_code}")
    except httpx.HTTPError as exc:
        return Check("flower", WARN, f"{settings.flower_url} unreachable: {exc}")


def health(app: Any | None = None, more: Callable[[], list[Check]] | None = None) -> list[Check]:
    """The runtime's checks; `more` adds those of the layers above (beat's heartbeat, from the CLI)."""
    settings = get_settings()
    checks = [_redis(settings), _database(settings)]
    sentinel = _sentinel(settings)
    if sentinel is not None:
        checks.insert(1, sentinel)
    if checks[0].status == FAIL:
        return checks
    memory = redis_memory(settings)
    checks.insert(1, memory)
    replicas = _replicas(settings)
    if replicas is not None:
        checks.insert(2, replicas)
    if app is None:
        app = celery_app
    if memory.status == FAIL and memory.detail.startswith("Redis is out of memory"):
        # Asking the workers is a write (a broadcast on the pidbox) that a full Redis refuses: their
        # silence would be blamed on them.
        checks.append(Check("workers", WARN, "not asked: Redis is out of memory and refuses the question "
                                             "(see redis memory)"))
    else:
        checks += _workers(app)
    if more is not None:
        checks += more()
    checks += _breakers()
    flower = _flower(settings)
    if flower:
        checks.append(flower)
    return checks


def mask(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return f"set, {len(secret)} chars, ****{secret[-2:]}" if len(secret) >= 12 else "set (hidden)"
    if isinstance(value, str) and value.lower().startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        return redact_redis_url(value)  # each of a sentinel:// URL's entries, which make_url cannot parse
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:
            return value.split("@")[-1]
    return str(value)


NOT_USED = "not used (not in OPSQ_PLATFORMS): its settings are not checked, its actions are refused at submit"


def _platform_fields(settings: Settings) -> dict[str, tuple[str, str | None]]:
    """Each platform setting's field name -> (its platform, its extra_settings key or None for base URL/token)."""
    owners: dict[str, tuple[str, str | None]] = {}
    for platform, cls in settings.registry.items():
        if cls.remote:
            owners[f"{platform}_base_url"] = owners[f"{platform}_token"] = (platform, None)
            owners.update({f"{platform}_{key}": (platform, key) for key in cls.extra_settings})
    return owners


def _shown(settings: Settings, platform: str, key: str, env_name: str) -> Check | None:
    """A set secret a person chooses (a webhook signing key, the proxy's URL): what its executor lets be shown of
    it, or FAIL with the executor's own complaint when malformed (every call would fail on it)."""
    setting = EXECUTORS[platform].extra_settings[key]
    raw = settings.platform(platform).extra.get(key)
    if setting.shown is None or raw is None:
        return None
    try:
        return Check(env_name, OK, setting.shown(raw))
    except ValueError as exc:
        return Check(env_name, FAIL, str(exc))


def validate_env() -> list[Check]:
    """Every setting, secrets masked, with the problems that pydantic alone cannot see. The settings of a platform
    not in OPSQ_PLATFORMS are one line saying so: an installation that does not call Notion needs no token for it."""
    settings = get_settings()
    used = [p for p in TOKEN_PLATFORMS if settings.uses(p)]
    # A platform's missing token replaces its `(not set)` line: one line per setting, saying what it means.
    replaced = {c.name: c for c in (_missing_token(settings, p) for p in used) if c is not None}
    for platform in used:
        own = settings.platform(platform)
        for key, setting in EXECUTORS[platform].extra_settings.items():
            if setting.required_with_token and own.token and key not in own.extra:
                name = f"OPSQ_{platform.upper()}_{key.upper()}"
                replaced[name] = Check(name, WARN, f"not set: {platform} needs {setting.description or key} with "
                                                   "the token")
    owners = _platform_fields(settings)
    out: list[Check] = []
    for name in type(settings).model_fields:
        env_name = f"OPSQ_{name.upper()}"
        owner, extra_key = owners.get(name, (None, None))
        if owner is not None and not settings.uses(owner):
            if not any(c.name == owner for c in out):
                out.append(Check(owner, OK, NOT_USED))
            continue
        shown = _shown(settings, owner, extra_key, env_name) if owner is not None and extra_key else None
        if name == "platforms":
            shown = Check(env_name, OK, ",".join(settings.platforms) if settings.platforms else "(not set: every "
                                                                                               "platform)")
        out.append(replaced.get(env_name) or shown or Check(env_name, OK, mask(getattr(settings, name))))
    for platform in used:
        own = settings.platform(platform)
        if not own.base_url.startswith(("http://", "https://")):
            out.append(Check(f"{platform} base URL", FAIL, f"{own.base_url!r} is not an http(s) URL"))
    if settings.uses("webhook"):
        out += _webhook_checks(settings.platform("webhook").extra)
    if settings.visibility_timeout_s <= max(settings.retry_cap_s, settings.breaker.open_s):
        out.append(Check("OPSQ_VISIBILITY_TIMEOUT_S", WARN,
                         "not longer than the longest wait (retry cap / breaker open_s): waiting messages can be "
                         "delivered twice (the guards keep that from calling a platform twice)"))
    if settings.redis_url is None:
        out.append(Check("OPSQ_REDIS_URL", WARN, "not set: the embedded Redis is for one machine only"))
    else:
        out += _redis_url_checks(settings)
    if settings.database_url is None:
        out.append(Check("OPSQ_DATABASE_URL", WARN, "not set: SQLite in OPSQ_HOME (embedded default)"))
    return out


#: Hosts the sandbox is reached at: this machine, or deploy/docker-compose.yml's `sandbox` service.
SANDBOX_HOSTS = frozenset({"localhost", "sandbox"})


def is_sandbox_url(platform: str, base_url: str) -> bool:
    """Whether a platform's base URL is the sandbox's: the sandbox serves each platform at /<platform> of its root
    (executors.sandbox.server), so the path is exactly that, and it listens on this machine (a loopback address or
    `localhost`) or is deploy/docker-compose.yml's `sandbox` service, as OPSQ_PLATFORM_BASE_URL or a per-platform
    OPSQ_<PLATFORM>_BASE_URL reaches it. A gateway at https://gw.corp/slack is a real API: no platform's own root
    ends that way (https://slack.com/api), but an installation's proxy in front of them may."""
    try:
        parts = urlsplit(base_url)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if parts.path.rstrip("/") != f"/{platform}":
        return False
    if host in SANDBOX_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _missing_token(settings: Settings, platform: str) -> Check | None:
    """A platform without its token: every one of its actions fails as auth. On a real API that is a FAIL
    (the configuration is wrong); on the sandbox a WARN (it wants a token too, but any will do)."""
    if settings.token(platform) is not None:
        return None
    name = f"OPSQ_{platform.upper()}_TOKEN"
    base_url = settings.base_url(platform)
    if is_sandbox_url(platform, base_url):
        return Check(name, WARN, f"not set: {platform} actions fail as auth on the sandbox at {base_url} too (it "
                                 f"takes any token but 'invalid': export {name}=sandbox)")
    return Check(name, FAIL, f"not set: {platform} actions fail as auth at {base_url} (set {name}, point "
                             f"OPSQ_PLATFORM_BASE_URL at the sandbox, or leave {platform} out of OPSQ_PLATFORMS "
                             "if this installation does not call it)")


def _webhook_checks(extra: dict[str, str]) -> list[Check]:
    """What a webhook would otherwise find out at its first call: a malformed redirect count, an allow-list that
    opens the cloud metadata service (a CIDR covering 169.254.169.254), and an allow-listed proxy. (A malformed
    OPSQ_WEBHOOK_SECRETS or OPSQ_WEBHOOK_PROXY is the FAIL on its own line: _shown.)"""
    out = []
    proxy = _allow_listed_proxy(extra)
    if proxy is not None:
        out.append(proxy)
    if not extra.get("max_redirects", "0").isdigit():
        out.append(Check("OPSQ_WEBHOOK_MAX_REDIRECTS", FAIL, "not a whole number: webhooks follow no redirect"))
    guard = AddressGuard.parse(extra.get("allow_hosts"))
    opened = [str(net) for net in guard.networks
              if any(refusal(ip) == "link-local" for ip in (net[0], net[-1])) or net.prefixlen == 0]
    if opened:
        out.append(Check("OPSQ_WEBHOOK_ALLOW_HOSTS", WARN, f"{', '.join(opened)} lets webhooks reach link-local "
                         "addresses (the cloud metadata service 169.254.169.254): allow narrower networks"))
    return out


def _allow_listed_proxy(extra: dict[str, str]) -> Check | None:
    """The webhook proxy is trusted as configured and needs no allow-listing; the old docs said to allow-list it,
    which also makes it a webhook destination (any port of its host: a hostname or a CIDR opens them all). WARN
    when the address guard admits its name or one of its addresses (a name that does not resolve: its name only)."""
    try:
        proxy = WebhookProxy.parse(extra.get("proxy"))
    except ValueError:
        return None  # the FAIL on OPSQ_WEBHOOK_PROXY's own line says why
    if proxy is None:
        return None
    guard = AddressGuard.parse(extra.get("allow_hosts"))
    admitted = proxy.host if guard.host_allowed(proxy.host) else None
    if admitted is None:
        # A name that does not resolve from here: no address to compare (the workers' resolver may differ anyway).
        with contextlib.suppress(OSError):
            admitted = next((str(ip) for ip in addresses_of(proxy.host, proxy.port) if guard.address_allowed(ip)),
                            None)
    if admitted is None:
        return None
    return Check("OPSQ_WEBHOOK_ALLOW_HOSTS", WARN,
                 f"admits the webhook proxy ({admitted}): a webhook action may then call it, or any port of its host, "
                 "as a destination; the proxy needs no allow-listing (it is trusted as OPSQ_WEBHOOK_PROXY): remove "
                 "it from OPSQ_WEBHOOK_ALLOW_HOSTS (docs/RUNBOOK.md, OPSQ_WEBHOOK_PROXY)")


def _redis_url_checks(settings: Settings) -> list[Check]:
    """OPSQ_REDIS_URL with the Redis settings that go with it (workers.dev.broker_url): for Sentinel, which
    master and which Sentinels (`opsq health` says whether they answer)."""
    try:
        target = redis_target(settings)
    except OpsqError as exc:
        return [Check("OPSQ_REDIS_URL", FAIL, str(exc))]
    if not target.is_sentinel:
        if settings.redis_sentinel_master or settings.redis_sentinel_password:
            return [Check("OPSQ_REDIS_SENTINEL_MASTER", WARN, "set, but OPSQ_REDIS_URL is not a sentinel:// URL: "
                                                               "the Sentinel settings are not used")]
        return []
    where = ", ".join(f"{h}:{p}" for h, p in target.sentinels)
    passwords = (f"master password {'set' if target.password else 'not set'}, "
                 f"sentinel password {'set' if target.sentinel_password else 'not set'}")
    out = [Check("redis sentinel", OK, f"master {target.master} (db {target.db}) through "
                                       f"{len(target.sentinels)} sentinel(s): {where}; {passwords}")]
    if not settings.redis_replica_acks:
        out.append(Check("OPSQ_REDIS_REPLICA_ACKS", WARN, "0: a failover loses what the old master had not yet "
                                                          "replicated, and an action run in that window can run "
                                                          "twice (1 closes it; docs/RUNBOOK.md, Redis high "
                                                          "availability)"))
    if len(target.sentinels) < 3:
        out.append(Check("redis sentinel", WARN, "fewer than 3 Sentinels listed: the client cannot find the master "
                                                 "when the one it knows is down (list every Sentinel)"))
    return out


def test_auth(platforms: list[str] | None = None) -> list[Check]:
    """Each platform's check_auth; by default every platform that needs a token. A platform not in OPSQ_PLATFORMS
    is one line saying so, not called (this installation holds no credentials for it)."""
    out = []
    settings = get_settings()
    for platform in TOKEN_PLATFORMS if platforms is None else platforms:
        if platform not in EXECUTORS or not EXECUTORS[platform].remote:
            raise ValueError(f"unknown platform {platform!r}")
        if not settings.uses(platform):
            out.append(Check(platform, OK, "not used (not in OPSQ_PLATFORMS): not tested"))
            continue
        try:
            result = executor(platform).check_auth()
            who = {k: v for k, v in result.items() if k in ("team", "user", "name", "email", "id", "note")}
            out.append(Check(platform, OK, f"authenticated at {settings.base_url(platform) or 'per URL'} "
                                           + (json.dumps(who, sort_keys=True) if who else "")))
        except ExecutorError as exc:
            out.append(Check(platform, FAIL, f"[{exc.kind}] {exc.message}"))
    return out
