"""All configuration, from OPSQ_* environment variables, through one pydantic-settings class.

The platforms' settings are made from the executor registry (executors.registry): for each platform,
OPSQ_<PLATFORM>_BASE_URL, OPSQ_<PLATFORM>_TOKEN and one OPSQ_<PLATFORM>_<NAME> per entry of its executor's
`extra_settings` (OPSQ_NOTION_VERSION, OPSQ_TRELLO_API_KEY, OPSQ_GSHEETS_SPREADSHEET_ID).
`settings.platform(p)` is one platform's view of them, and `executor_config(p)` what its executor gets.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from executors.base import Executor, ExecutorConfig, RateLimit
from executors.registry import EXECUTORS
from workers.errors import ConfigError


def _strip_slash(v: str | None) -> str | None:
    return v.rstrip("/") if v else v


BaseUrl = Annotated[str | None, AfterValidator(_strip_slash)]

# The real services' API roots (each executor's default_base_url). OPSQ_PLATFORM_BASE_URL (the sandbox)
# or OPSQ_<PLATFORM>_BASE_URL replace them.
DEFAULT_BASE_URLS: dict[str, str] = {p: cls.default_base_url for p, cls in EXECUTORS.items()}


class BreakerConfig(BaseModel):
    """CLOSED -> OPEN after `failure_threshold` health failures within `window_s`; OPEN -> HALF_OPEN after
    `open_s`; at most `half_open_max` probe calls at once while HALF_OPEN."""

    failure_threshold: int = Field(5, ge=1)
    window_s: float = Field(60.0, gt=0)
    open_s: float = Field(30.0, gt=0)
    half_open_max: int = Field(1, ge=1)


class RateLimitConfig(BaseModel):
    """A token bucket shared by every worker: `rate` calls per second on average, bursts up to `burst`.
    rate 0 means unlimited."""

    rate: float = Field(ge=0)
    burst: int = Field(1, ge=1)

    @classmethod
    def of(cls, limit: RateLimit) -> RateLimitConfig:
        return cls(rate=limit.rate, burst=limit.burst)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?)?\s*([a-z]+))?\s*$", re.IGNORECASE)
_PER_UNIT = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hr": 3600.0,
             "hour": 3600.0, "d": 86400.0, "day": 86400.0}
UNLIMITED_WORDS = frozenset({"unlimited", "off", "none"})


def parse_rate(value: str | float | int) -> float:
    """A rate as operators write it, in calls per second: `1/s`, `50/min`, `1000/h`, `5/10s` (5 per 10 seconds),
    a bare number (per second); 0, `off` or `unlimited`: no limit."""
    if isinstance(value, bool):
        raise ValueError("a rate is a number or a text like 1/s, 50/min")
    if isinstance(value, int | float):
        rate = float(value)
    elif value.strip().lower() in UNLIMITED_WORDS:
        return 0.0
    else:
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"invalid rate {value!r}: write it as 1/s, 50/min, 1000/h, 5/10s or a number per second")
        count, multiple, unit = match.groups()
        seconds = 1.0
        if unit is not None:
            unit = unit.lower()
            per = _PER_UNIT.get(unit) or _PER_UNIT.get(unit.rstrip("s"))  # also secs, mins, hours
            if per is None:
                raise ValueError(f"invalid rate {value!r}: the unit is one of s, min, h, d")
            seconds = per
        seconds *= float(multiple) if multiple else 1.0
        if seconds <= 0:
            raise ValueError(f"invalid rate {value!r}: its period is zero")
        rate = float(count) / seconds
    if rate < 0 or rate != rate or rate == float("inf"):
        raise ValueError(f"invalid rate {value!r}")
    return rate


def format_rate(rate: float) -> str:
    """The shortest exact way to write a rate back: 1/s, 50/min, 0.5/s."""
    if rate <= 0:
        return "unlimited"
    if rate >= 1:
        return f"{rate:g}/s"
    for unit, seconds in (("s", 1.0), ("min", 60.0), ("h", 3600.0)):
        n = rate * seconds
        if abs(n - round(n)) < 1e-9 * max(1.0, n) and round(n) >= 1:
            return f"{round(n)}/{unit}"
    return f"{rate:g}/s"


class KeyLimitConfig(BaseModel):
    """A limit per key of one kind (`channel`, `token`, `spreadsheet`...): each key its own token bucket (`rate`
    calls per second, bursts up to `burst`) and/or at most `concurrency` of its actions calling at once. Unset
    fields: no such limit (an operator's runtime entry overrides only the fields it sets; 0 turns one off).
    `rate` may be written as text: 1/s, 50/min (parse_rate)."""

    model_config = ConfigDict(extra="forbid")

    rate: float | None = Field(None, ge=0)
    burst: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=0)

    @field_validator("rate", mode="before")
    @classmethod
    def _rate_text(cls, v: Any) -> Any:
        return parse_rate(v) if isinstance(v, str) else v


# Each executor's default_rate_limit: near the platform's documented limits (see the executor modules).
DEFAULT_RATE_LIMITS: dict[str, RateLimitConfig] = {
    p: RateLimitConfig.of(cls.default_rate_limit) for p, cls in EXECUTORS.items()
}


@dataclass(frozen=True)
class PlatformSettings:
    """One platform's settings, read from OPSQ_<PLATFORM>_* (see Settings.platform)."""

    platform: str
    base_url: str
    token: str | None = field(repr=False)
    #: the executor's extra_settings that are set, by name (OPSQ_NOTION_VERSION -> extra["version"])
    extra: dict[str, str] = field(repr=False)


class _Base(BaseSettings):
    """The settings read before the platforms' (the order `opsq validate-env` shows them in)."""

    # hide_input_in_errors: a refused setting's error would otherwise print the tail of every setting read
    # (pydantic's input_value), a password in OPSQ_REDIS_URL or a token included.
    model_config = SettingsConfigDict(env_prefix="OPSQ_", extra="ignore", case_sensitive=False,
                                      hide_input_in_errors=True)
    #: the executors whose settings are fields of this class (set by with_platforms)
    registry: ClassVar[Mapping[str, type[Executor]]] = {}

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        del env_settings
        return (init_settings, _EnvIgnoringEmptyJson(settings_cls), dotenv_settings, file_secret_settings)

    home: Path = Field(default=Path.home() / ".opsqueue", description="Where embedded state lives.")
    redis_url: str | None = None
    # The Redis master's password, instead of in OPSQ_REDIS_URL; and for a sentinel:// URL, the name the
    # Sentinels know the master by and the Sentinels' own password (workers.dev.broker_url).
    redis_password: SecretStr | None = None
    redis_sentinel_master: str | None = None
    redis_sentinel_password: SecretStr | None = None
    # How many replicas must have the guards' record of a call before the platform is called, and of its
    # success before the message is acknowledged (Redis' WAIT; workers.guards.redis_guard). 0: don't wait.
    # With a replicated Redis (Sentinel), 1 closes the window in which a failover loses what the old master
    # acknowledged and the new one never got: an action then runs once, not twice. It costs a replica's
    # round trip per admit and per success, and while no replica keeps up, actions wait (they do not run).
    redis_replica_acks: int = Field(0, ge=0, le=16)
    # Below the guards' socket timeout (5 s): a WAIT longer than that would read as Redis gone.
    redis_replica_ack_timeout_ms: int = Field(500, ge=1, le=4_000)
    database_url: str | None = None
    auto_migrate: bool = True
    # See workers.store.db.outcome_engine for what this trades.
    db_async_commit: bool = True
    # The worker's success records are committed in batches, at the latest this long after the first one
    # (workers.store.outcomes); 0 writes each one at once.
    outcome_flush_ms: int = Field(50, ge=0, le=60_000)

    # One base URL for every platform, each under /<platform> (the sandbox).
    platform_base_url: BaseUrl = None
    # The platforms this installation calls, as a comma list (OPSQ_PLATFORMS=slack,webhook); unset: every one.
    # validate-env and test-auth check only these, and an action on another one is refused at submit.
    platforms: Annotated[tuple[str, ...] | None, NoDecode] = None

    @field_validator("platforms", mode="before")
    @classmethod
    def _platform_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip().lower() for p in v.split(",") if p.strip()]
        if v is None or not v:
            return None  # OPSQ_PLATFORMS= (as an env file leaves it) is unset: every platform
        unknown = [p for p in v if p not in cls.registry]
        if unknown:
            raise ValueError(f"unknown platform {', '.join(map(repr, unknown))} (known: {', '.join(cls.registry)}; "
                             "a comma list, e.g. slack,webhook)")
        return tuple(dict.fromkeys(v))

    def uses(self, platform: str) -> bool:
        """Whether this installation calls `platform` (OPSQ_PLATFORMS; unset: every one). A platform that calls no
        service (noop) is always used: it costs nothing and needs no setting."""
        cls = self.registry.get(platform)
        return self.platforms is None or platform in self.platforms or (cls is not None and not cls.remote)

    @field_validator("database_url")
    @classmethod
    def _postgres_alias(cls, v: str | None) -> str | None:
        # postgres:// (Heroku's, many providers' and libpq's spelling) is an alias SQLAlchemy removed ("Can't load
        # plugin: sqlalchemy.dialects:postgres"): read it as PostgreSQL through psycopg 3, the driver we ship.
        # (Plain postgresql:// is given psycopg 3 by workers.store.db.make_engine.)
        if v is not None and v[:11].lower() == "postgres://":
            return "postgresql+psycopg://" + v[11:]
        return v

    @model_validator(mode="after")
    def _sentinel_needs_its_master(self) -> _Base:
        # Checked when the settings load, so a worker refuses to start rather than failing on its first
        # connection (workers.dev.broker_url checks the rest of the URL).
        if (self.redis_url or "").strip().lower().startswith("sentinel://") and not self.redis_sentinel_master:
            raise ValueError("OPSQ_REDIS_URL is a sentinel:// URL: set OPSQ_REDIS_SENTINEL_MASTER to the name the "
                             "Sentinels know the master by (`sentinel monitor NAME ...` in sentinel.conf)")
        return self


class _EnvIgnoringEmptyJson(EnvSettingsSource):
    """The environment, where a JSON-typed setting set to nothing (OPSQ_RATE_LIMITS=, as a compose file or an
    env file leaves it) is unset (its default), not a JSON error that breaks every command."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value, key, value_is_complex = super().get_field_value(field, field_name)
        if isinstance(value, str) and not value.strip() and self._field_is_complex(field)[0]:
            return None, key, value_is_complex
        return value, key, value_is_complex


S = TypeVar("S", bound=_Base)


def with_platforms(base: type[S], registry: Mapping[str, type[Executor]], name: str | None = None) -> type[S]:
    """`base` plus each remote platform's fields: <p>_base_url, <p>_token, and <p>_<name> for each entry of
    its executor's extra_settings; so OPSQ_SLACK_TOKEN, OPSQ_NOTION_VERSION, OPSQ_TRELLO_API_KEY..."""
    fields: dict[str, Any] = {}
    for platform, cls in registry.items():
        if not cls.remote:
            continue
        fields[f"{platform}_base_url"] = (BaseUrl, None)
        fields[f"{platform}_token"] = (SecretStr | None, None)
        for key, setting in cls.extra_settings.items():
            if setting.secret:
                kind: Any = SecretStr | None
                default: Any = None if setting.default is None else SecretStr(setting.default)
            else:
                kind = str | None if setting.default is None else str
                default = setting.default
            fields[f"{platform}_{key}"] = (kind, Field(default, description=setting.description or None))
    clash = sorted(set(fields) & set(base.model_fields))
    if clash:
        raise ValueError(f"platform settings collide with existing ones: {', '.join(clash)}")
    model = create_model(name or base.__name__, __base__=base, __module__=base.__module__, **fields)
    model.registry = {**base.registry, **registry}
    return model


if TYPE_CHECKING:
    _WithPlatforms = _Base
else:
    _WithPlatforms = with_platforms(_Base, EXECUTORS, "_WithPlatforms")


class Settings(_WithPlatforms):
    http_connect_timeout_s: float = Field(5.0, gt=0)
    http_read_timeout_s: float = Field(30.0, gt=0)

    max_attempts: int = Field(5, ge=1, le=100)
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(300.0, gt=0)
    # Seconds an unacknowledged message stays invisible before Redis hands it to another worker.
    visibility_timeout_s: int = Field(3600, ge=1)
    # An action's params travel in its message, its record and its audit entry: a submit larger than this
    # (JSON bytes) is refused with a clear error instead of filling Redis and the worker's memory.
    max_params_bytes: int = Field(1_048_576, ge=1024)
    # A workflow spec (its YAML/JSON bytes, or its input's JSON) is stored with its run and read at every step:
    # one larger than this is refused at submit, before it is parsed (workflows.spec).
    max_spec_bytes: int = Field(1_048_576, ge=1024)
    # A workflow is sent in segments of at most this many levels (workflows.compiler): each Celery message
    # carries the rest of its segment, so a long chain sent whole would cost time quadratic in its length.
    workflow_segment_levels: int = Field(50, ge=1)
    # A pool process is replaced after this many tasks, or once its resident memory passes this (KiB) at the
    # end of a task: one large action must not leave a process holding hundreds of MB for good. 0: never.
    worker_max_tasks_per_child: int = Field(10_000, ge=0)
    worker_max_memory_per_child_kib: int = Field(262_144, ge=0)
    result_expires_s: int = Field(86400, ge=60)

    task_sent_events: bool = False
    task_modules: list[str] = Field(default_factory=lambda: ["workers.tasks", "workflows.tasks", "beat.tasks"])

    # The Redis guards (workers/guards). JSON in the environment, e.g.
    # OPSQ_BREAKERS='{"slack": {"failure_threshold": 3, "open_s": 10}}', OPSQ_RATE_LIMITS='{"notion": {"rate": 5}}'
    guards_enabled: bool = True
    breaker: BreakerConfig = BreakerConfig()
    # Per platform, only the fields that differ from `breaker`: {"slack": {"open_s": 10}}.
    breakers: dict[str, dict[str, float]] = Field(default_factory=dict)
    rate_limits: dict[str, RateLimitConfig] = Field(default_factory=dict)
    # Limits per key, by platform and kind of key (workers.guards.limits): OPSQ_KEY_LIMITS='{"slack": {"channel":
    # {"rate": "1/s"}, "token": {"rate": "50/min"}}, "gsheets": {"spreadsheet": {"rate": "60/min", "concurrency": 4}}}'.
    # The defaults: `opsq ratelimit set` changes them at runtime, for every worker, without a restart.
    key_limits: dict[str, dict[str, KeyLimitConfig]] = Field(default_factory=dict)
    # How long a 429 without Retry-After (Google's rateLimitExceeded) pauses the limited key for the whole fleet.
    rate_limit_pause_s: float = Field(1.0, ge=0)
    idempotency_ttl_s: int = Field(86400, ge=1)
    # How long a worker's claim on a running action holds before a redelivered message may run it.
    # Default: longer than one attempt can take (connect + read timeout + 30 s).
    idempotency_lease_s: float | None = Field(None, gt=0)

    # Beat and maintenance (beat/). Intervals in seconds, by task name: OPSQ_BEAT_INTERVALS='{"cleanup": 600}'.
    beat_intervals: dict[str, float] = Field(default_factory=dict)
    beat_backup_hour_utc: int = Field(2, ge=0, le=23)
    # How often beat itself reads Redis's memory (one INFO) for the redis_memory alert, which it raises straight in
    # the database: a full Redis refuses the task that would (beat.scheduler).
    beat_memory_check_s: float = Field(15.0, gt=0, le=3600)
    stuck_after_s: float = Field(900.0, gt=0)
    # A consuming worker refreshes its liveness this often x5; past it, any worker gives back the messages it
    # held (workers.held_messages) and beat scans for what it had popped but not recorded.
    consumer_ttl_s: float = Field(10.0, ge=2, le=300)
    # After an ambiguous failure (the answer lost, the platform may still be acting on the request), the next
    # attempt waits at least this long before it looks the effect up: a platform slower than the read timeout
    # applies the call late, and a lookup made at once would not see it and call again. Unset: the HTTP read
    # timeout (the platform gets as long again as the first attempt waited).
    ambiguous_settle_s: float | None = Field(None, ge=0)
    stuck_fail_after_s: float = Field(86400.0, gt=0)
    stuck_max_requeues: int = Field(3, ge=1)
    retention_days: float = Field(30.0, gt=0)
    backup_dir: Path | None = None
    backup_retention_days: float = Field(14.0, gt=0)
    alert_success_rate: float = Field(0.9, gt=0, le=1)
    alert_success_window_s: float = Field(900.0, gt=0)
    alert_min_sample: int = Field(10, ge=1)
    alert_queue_depth: int = Field(100, ge=1)
    alert_queue_depth_for_s: float = Field(600.0, ge=0)
    alert_breaker_open_for_s: float = Field(300.0, ge=0)
    alert_oldest_message_age_s: float = Field(900.0, gt=0)
    alert_oldest_message_for_s: float = Field(300.0, ge=0)
    # `opsq health` and the redis_memory alert warn when Redis uses more than this share of its maxmemory
    # (when full it refuses every write: submits, acks, results).
    redis_memory_warn_ratio: float = Field(0.8, gt=0, le=1)
    alert_slack_channel: str | None = None
    # Where a workflow's approvals are posted with Approve / Deny buttons (slack.request_approval; the clicks go to
    # `opsq api`'s /slack/interactions); unset: not posted (decided with the CLI or the API).
    approval_slack_channel: str | None = None
    flower_url: str | None = None

    sentry_dsn: SecretStr | None = None

    # `opsq api` (workers.api): where it listens (a non-loopback address only once a token exists), and how many
    # failed authentications one client address may make per minute before it is refused (429) for that minute.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8700, ge=1, le=65535)
    api_auth_failures_per_min: int = Field(10, ge=1)
    # The reverse proxies in front of `opsq api` (comma list of addresses or CIDRs): only a request from one of them
    # has its X-Forwarded-For read for the client's address (what the failed-authentication limit counts by).
    # Empty (the default): the header is ignored, whoever sends it, 127.0.0.1 included.
    api_trusted_proxies: str = ""
    # Approval policies' `group:NAME` (workflows.client.approve): {"finance": ["dana", "api:lee"]}.
    approver_groups: dict[str, list[str]] = Field(default_factory=dict)
    # Approvals from Slack (POST /slack/interactions): the Slack app's signing secret, and who each Slack user is as
    # an approver: {"U01ABCDEF": "dana"} (the actor name the audit trail and approval policies use). A Slack user
    # not listed is refused.
    slack_signing_secret: SecretStr | None = None
    slack_approvers: dict[str, str] = Field(default_factory=dict)
    # A page of `GET /v1/actions` at most.
    api_page_max: int = Field(200, ge=1, le=10_000)

    def platform(self, platform: str) -> PlatformSettings:
        """One platform's settings: its base URL, its token and its executor's extra settings that are set."""
        cls = self.registry.get(platform)
        extra: dict[str, str] = {}
        for key in cls.extra_settings if cls is not None and cls.remote else ():
            value = getattr(self, f"{platform}_{key}")
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                extra[key] = value
        return PlatformSettings(platform=platform, base_url=self.base_url(platform), token=self.token(platform),
                                extra=extra)

    def base_url(self, platform: str) -> str:
        own: str | None = getattr(self, f"{platform}_base_url", None)
        if own:
            return own
        if self.platform_base_url:
            return f"{self.platform_base_url}/{platform}"
        cls = self.registry.get(platform)
        return cls.default_base_url if cls is not None else ""

    def token(self, platform: str) -> str | None:
        secret: SecretStr | None = getattr(self, f"{platform}_token", None)
        return secret.get_secret_value() if secret else None

    def executor_config(self, platform: str) -> ExecutorConfig:
        own = self.platform(platform)
        return ExecutorConfig(
            base_url=own.base_url,
            token=own.token,
            connect_timeout_s=self.http_connect_timeout_s,
            read_timeout_s=self.http_read_timeout_s,
            extra=own.extra,
        )

    @field_validator("api_trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, v: str) -> str:
        networks = []
        for proxy in (p.strip() for p in v.split(",") if p.strip()):
            try:
                network = ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                # `*` included: trusting every sender's header is what lets any client choose its own address.
                raise ValueError(f"{proxy!r} is not an IP address or CIDR (list the proxies' addresses, "
                                 "comma-separated)") from None
            if network.prefixlen == 0:
                raise ValueError(f"{proxy!r} trusts every address, as `*` would: list the proxies' own addresses")
            # Normalised (10.1.0.1/16 -> 10.1.0.0/16): uvicorn parses each entry strictly and keeps one with host
            # bits as a plain string that matches nothing, silently.
            networks.append(str(network) if "/" in proxy else str(network.network_address))
        return ",".join(networks)

    @field_validator("slack_approvers")
    @classmethod
    def _check_slack_approvers(cls, v: dict[str, str]) -> dict[str, str]:
        # A Slack user is a person: named `api:...`, the self-approval rule would take them for a token's owner.
        tokens = sorted(user for user, name in v.items() if name.startswith("api:") or not name.strip())
        if tokens:
            raise ValueError(f"Slack user(s) {', '.join(tokens)}: an approver's name is a person's (as approval "
                             "policies name them), not empty and not an API token's `api:...`")
        return v

    @field_validator("breakers")
    @classmethod
    def _check_breakers(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for platform, fields in v.items():
            BreakerConfig.model_validate({**BreakerConfig().model_dump(), **fields})  # refuse bad entries at load
            unknown = set(fields) - set(BreakerConfig.model_fields)
            if unknown:
                raise ValueError(f"breakers.{platform}: unknown field(s) {', '.join(sorted(unknown))}")
        return v

    @model_validator(mode="after")
    def _key_limits_name_known_keys(self) -> Settings:
        for platform, kinds in self.key_limits.items():
            cls = self.registry.get(platform)
            if cls is None:
                raise ValueError(f"key_limits: unknown platform {platform!r}")
            known = cls.limit_key_sources()
            unknown = sorted(set(kinds) - set(known))
            if unknown:
                raise ValueError(f"key_limits.{platform}: no key kind {', '.join(unknown)} (known: "
                                 f"{', '.join(sorted(known))})")
        return self

    @model_validator(mode="after")
    def _waits_fit_in_the_visibility_timeout(self) -> Settings:
        """A retry waits up to OPSQ_RETRY_CAP_S (Retry-After included, workers.retry) held by a worker,
        unacknowledged: Redis would hand a message that waits longer than OPSQ_VISIBILITY_TIMEOUT_S to
        another worker, again and again while it waits."""
        vt = self.visibility_timeout_s
        if not vt > self.retry_cap_s:
            raise ValueError(f"OPSQ_VISIBILITY_TIMEOUT_S ({vt:g}) must be greater than OPSQ_RETRY_CAP_S "
                             f"({self.retry_cap_s:g}): a retry waiting that long would be redelivered while it waits")
        return self

    def breaker_config(self, platform: str) -> BreakerConfig:
        overrides = self.breakers.get(platform)
        if not overrides:
            return self.breaker
        return BreakerConfig.model_validate({**self.breaker.model_dump(), **overrides})

    def rate_limit(self, platform: str) -> RateLimitConfig:
        own = self.rate_limits.get(platform)
        if own is not None:
            return own
        cls = self.registry.get(platform)
        return RateLimitConfig.of(cls.default_rate_limit) if cls is not None else RateLimitConfig(rate=0)

    @property
    def ambiguous_settle(self) -> float:
        return self.http_read_timeout_s if self.ambiguous_settle_s is None else self.ambiguous_settle_s

    @property
    def lease_s(self) -> float:
        return self.idempotency_lease_s or (self.http_connect_timeout_s + self.http_read_timeout_s + 30.0)

    @property
    def resolved_backup_dir(self) -> Path:
        return self.backup_dir or self.home / "backups"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'opsqueue.db'}"


@functools.cache
def get_settings() -> Settings:
    """The settings; a refused one is a ConfigError: one line naming the variable and what is wrong with it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_invalid(exc)) from None
    except SettingsError as exc:  # a JSON-typed setting that is not JSON
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"OPSQ_{match.group(1).upper()}" if match else "an OPSQ_ setting"
        raise ConfigError(f"{name} is not valid JSON (e.g. {name}='{{\"slack\": {{...}}}}'); fix it, or unset "
                          "it for the default") from None


def describe_invalid(exc: ValidationError) -> str:
    """pydantic's errors as one line: each variable (OPSQ_...), what is wrong with its value in plain words, and
    the fix; no input values (they may be secrets) and no pydantic links."""
    parts, named = [], False
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc:
            named = True
            name = f"OPSQ_{loc[0].upper()}" + "".join(f"[{p}]" for p in loc[1:])
            parts.append(f"{name}: {message[:1].lower()}{message[1:]}")
        else:  # a check across settings: its message names them and says what to do
            parts.append(message)
    fix = " (fix it, or unset it for the default)" if named else ""
    return "invalid setting: " + "; ".join(parts) + fix


def reload_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()
