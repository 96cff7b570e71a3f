"""Which Redis to use: OPSQ_REDIS_URL, else the embedded Redis another opsqueue process started.

OPSQ_REDIS_URL is one of:

- `redis://[[user]:password@]host[:port][/db]` (or `unix://`): one Redis server;
- `rediss://...` the same over TLS, with redis-py's query parameters: `ssl_cert_reqs` (`required`, the
  default; `optional`; `none`), `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`. The broker, the result
  backend and the guards' client get the same TLS options (`RedisTarget.ssl`);
- `sentinel://[[user]:password@]host[:port][/db];sentinel://host2[:port];...`: the Redis Sentinels that
  watch a replicated Redis (port 26379 by default). OPSQ_REDIS_SENTINEL_MASTER names the master they
  watch (`sentinel monitor NAME ...` in sentinel.conf); OPSQ_REDIS_SENTINEL_PASSWORD is the Sentinels'
  own password, if they have one. The user, password and db in the first entry are the *master's*: kombu
  and Celery read them from there and ignore the other entries', so another entry may not set different
  ones (refused here instead of silently ignored).

The master's password may also come from OPSQ_REDIS_PASSWORD (a secret setting, never shown), which is
put into the URL handed to kombu, Celery and redis-py; not both.

Every Redis client of opsqueue (the broker, the result backend, the guards' client) is built from
`redis_target(settings)`, so the three always agree on which Redis they use.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit

from workers.dev import embedded_redis
from workers.errors import ConfigError
from workers.settings import Settings

SENTINEL_SCHEME = "sentinel"
SENTINEL_DEFAULT_PORT = 26379
# The schemes of one Redis server that redis-py's from_url and kombu's Redis transport both understand.
SERVER_SCHEMES = ("redis", "rediss", "unix")
SSL_QUERY_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


@dataclass(frozen=True)
class RedisTarget:
    """Where opsqueue's Redis is, parsed once from OPSQ_REDIS_URL and the Redis settings."""

    #: the URL to hand to kombu, Celery and redis-py: OPSQ_REDIS_PASSWORD put in when set, the TLS options
    #: taken out (`ssl`). Holds secrets.
    url: str = field(repr=False)
    scheme: str
    #: (host, port) of each Sentinel; empty for a single server
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    #: for rediss://, the TLS options (kombu's `broker_use_ssl` and Celery's `redis_backend_use_ssl`)
    ssl: dict[str, Any] | None = None

    @property
    def is_sentinel(self) -> bool:
        return self.scheme == SENTINEL_SCHEME

    @property
    def display(self) -> str:
        """The URL with every password replaced by `**`: what may be shown or logged."""
        return redact_redis_url(self.url)


def resolve_redis_url(settings: Settings) -> str:
    """The URL every Redis client uses (with OPSQ_REDIS_PASSWORD put in when set). Holds secrets: show
    `redis_target(settings).display` instead."""
    return redis_target(settings).url


def redis_target(settings: Settings) -> RedisTarget:
    url = settings.redis_url
    if not url:
        url = embedded_redis.discover(settings.home)
        if not url:
            raise ConfigError(
                "no Redis: set OPSQ_REDIS_URL, or start `opsq worker` (it starts an embedded Redis when none is set)"
            )
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    sentinel_password = (settings.redis_sentinel_password.get_secret_value()
                         if settings.redis_sentinel_password else None)
    return parse_redis_url(url, master=settings.redis_sentinel_master, password=password,
                           sentinel_password=sentinel_password)


def parse_redis_url(url: str, *, master: str | None = None, password: str | None = None,
                    sentinel_password: str | None = None) -> RedisTarget:
    """Checks OPSQ_REDIS_URL and the Redis settings together; ConfigError saying what is wrong (never with
    a password in it)."""
    chunks = [c.strip() for c in url.split(";") if c.strip()]
    if not chunks:
        raise ConfigError("OPSQ_REDIS_URL is empty")
    first = _split(chunks[0])
    scheme = first.scheme.lower()
    if scheme != SENTINEL_SCHEME:
        if scheme not in SERVER_SCHEMES:
            raise ConfigError(f"OPSQ_REDIS_URL: scheme {scheme or '(none)'}:// is not one of "
                              f"{', '.join(s + '://' for s in (*SERVER_SCHEMES, SENTINEL_SCHEME))}")
        if len(chunks) > 1:
            raise ConfigError("OPSQ_REDIS_URL: several servers separated by ';' need sentinel:// URLs "
                              "(kombu would treat the others as fail-over brokers, the guards would not)")
        url_password = unquote(first.password) if first.password is not None else None
        if password and url_password:
            raise ConfigError("the Redis password is set twice: in OPSQ_REDIS_URL and OPSQ_REDIS_PASSWORD; keep one")
        if scheme == "rediss":
            # The TLS options travel apart (RedisTarget.ssl): kombu would let the URL's replace them whole.
            chunks[0] = _without_ssl_query(chunks[0])
        return RedisTarget(url=_with_password(chunks[0], password) if password else chunks[0], scheme=scheme,
                           db=_db(first, scheme), username=unquote(first.username) if first.username else None,
                           password=password or url_password, sentinel_password=sentinel_password,
                           ssl=_ssl_options(first) if scheme == "rediss" else None)

    if not master:
        raise ConfigError("OPSQ_REDIS_URL is a sentinel:// URL: set OPSQ_REDIS_SENTINEL_MASTER to the name the "
                          "Sentinels know the master by (`sentinel monitor NAME ...` in sentinel.conf)")
    sentinels: list[tuple[str, int]] = []
    for i, chunk in enumerate(chunks):
        parts = _split(chunk)
        if parts.scheme.lower() != SENTINEL_SCHEME:
            raise ConfigError(f"OPSQ_REDIS_URL: entry {i + 1} is not a sentinel:// URL (every entry must be one)")
        if not parts.hostname:
            raise ConfigError(f"OPSQ_REDIS_URL: entry {i + 1} has no host")
        try:
            port = parts.port or SENTINEL_DEFAULT_PORT
        except ValueError:
            raise ConfigError(f"OPSQ_REDIS_URL: entry {i + 1} has a port that is not a number") from None
        if i > 0 and ((parts.password is not None and parts.password != first.password)
                      or (parts.username and parts.username != first.username)
                      or (parts.path.strip("/") and parts.path.strip("/") != first.path.strip("/"))):
            raise ConfigError(f"OPSQ_REDIS_URL: entry {i + 1} sets its own user, password or db: only the first "
                              "entry's are used (they are the master's), so set them there only")
        sentinels.append((parts.hostname, port))
    url_password = unquote(first.password) if first.password is not None else None
    if password and url_password:
        raise ConfigError("the Redis password is set twice: in OPSQ_REDIS_URL and OPSQ_REDIS_PASSWORD; keep one")
    if password:
        chunks[0] = _with_password(chunks[0], password)
    return RedisTarget(url=";".join(chunks), scheme=scheme, sentinels=tuple(sentinels), master=master,
                       db=_db(first, scheme), username=unquote(first.username) if first.username else None,
                       password=password or url_password, sentinel_password=sentinel_password)


def redact_redis_url(url: str) -> str:
    """Each entry of a Redis URL with its password replaced by `**` (kombu's way of showing one)."""
    out = []
    for chunk in url.split(";"):
        scheme, sep, rest = chunk.partition("://")
        netloc, slash, tail = rest.partition("/")
        userinfo, at, hostport = netloc.rpartition("@")
        if sep and at:
            user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
            netloc = f"{user}:**@{hostport}"
        out.append(f"{scheme}{sep}{netloc}{slash}{tail}" if sep else chunk)
    return ";".join(out)


def _split(chunk: str) -> SplitResult:
    try:
        return urlsplit(chunk)
    except ValueError:
        # urlsplit's messages do not carry the URL, but say nothing more than this either.
        raise ConfigError("OPSQ_REDIS_URL is not a URL") from None


def _db(parts: SplitResult, scheme: str) -> int:
    if scheme == "unix":
        return 0  # the path is the socket's; a db comes as ?db=N, which redis-py and kombu read themselves
    path = parts.path.strip("/")
    if not path:
        return 0
    if not path.isdigit():
        raise ConfigError(f"OPSQ_REDIS_URL: the db ({path!r}) must be a number")
    return int(path)


def _ssl_options(parts: SplitResult) -> dict[str, Any]:
    """A rediss:// URL's TLS options, as kombu and Celery take them. The certificate is checked unless the
    URL says otherwise (as redis-py's from_url does; kombu alone would not check it)."""
    query = {k: v[-1] for k, v in parse_qs(parts.query).items() if k in SSL_QUERY_KEYS}
    reqs = query.pop("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if reqs not in CERT_REQS:
        raise ConfigError(f"OPSQ_REDIS_URL: ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {reqs!r}")
    return {"ssl_cert_reqs": CERT_REQS[reqs], **query}


def _without_ssl_query(chunk: str) -> str:
    base, _, query = chunk.partition("?")
    kept = "&".join(p for p in query.split("&") if p and p.split("=", 1)[0] not in SSL_QUERY_KEYS)
    return f"{base}?{kept}" if kept else base


def _with_password(chunk: str, password: str) -> str:
    """`chunk` with `password` as its userinfo's password (quoted: kombu, Celery and redis-py unquote it)."""
    scheme, _, rest = chunk.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if at else ""
    return f"{scheme}://{user}:{quote(password, safe='')}@{hostport}{slash}{tail}"
