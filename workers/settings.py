"""All configuration, from OPSQ_* environment variables, through one pydantic-settings class."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from executors.base import ExecutorConfig

# The real services' API roots. OPSQ_PLATFORM_BASE_URL (the sandbox) or OPSQ_<PLATFORM>_BASE_URL replace them.
DEFAULT_BASE_URLS: dict[str, str] = {
    "slack": "https://slack.com/api",
    "notion": "https://api.notion.com",
    "trello": "https://api.trello.com",
    "gdrive": "https://www.googleapis.com",
    "gsheets": "https://sheets.googleapis.com",
    "webhook": "",
    "noop": "",
}


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


# Near each platform's documented limits: Slack chat.postMessage ~1/s per channel with short bursts;
# Notion an average of 3 requests/s; Trello 100 requests per 10 s per token; Drive and Sheets per-user
# quotas (Sheets: 60 write requests per minute per user).
DEFAULT_RATE_LIMITS: dict[str, RateLimitConfig] = {
    "slack": RateLimitConfig(rate=1.0, burst=10),
    "notion": RateLimitConfig(rate=3.0, burst=3),
    "trello": RateLimitConfig(rate=10.0, burst=100),
    "gdrive": RateLimitConfig(rate=10.0, burst=20),
    "gsheets": RateLimitConfig(rate=1.0, burst=10),
    "webhook": RateLimitConfig(rate=0),
    "noop": RateLimitConfig(rate=0),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSQ_", extra="ignore", case_sensitive=False)

    home: Path = Field(default=Path.home() / ".opsqueue", description="Where embedded state lives.")
    redis_url: str | None = None
    database_url: str | None = None
    auto_migrate: bool = True
    # See workers.store.db.outcome_engine for what this trades.
    db_async_commit: bool = True
    # The worker's success records are committed in batches, at the latest this long after the first one
    # (workers.store.outcomes); 0 writes each one at once.
    outcome_flush_ms: int = Field(50, ge=0, le=60_000)

    platform_base_url: str | None = None
    slack_base_url: str | None = None
    slack_token: SecretStr | None = None
    notion_base_url: str | None = None
    notion_token: SecretStr | None = None
    notion_version: str = "2022-06-28"
    trello_base_url: str | None = None
    trello_token: SecretStr | None = None
    trello_api_key: SecretStr | None = None
    gdrive_base_url: str | None = None
    gdrive_token: SecretStr | None = None
    gsheets_base_url: str | None = None
    gsheets_token: SecretStr | None = None
    gsheets_spreadsheet_id: str = "opsqueue"
    webhook_base_url: str | None = None
    webhook_token: SecretStr | None = None

    http_connect_timeout_s: float = Field(5.0, gt=0)
    http_read_timeout_s: float = Field(30.0, gt=0)

    max_attempts: int = Field(5, ge=1, le=100)
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(300.0, gt=0)
    # Seconds an unacknowledged message stays invisible before Redis hands it to another worker.
    visibility_timeout_s: int = Field(3600, ge=1)
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
    idempotency_ttl_s: int = Field(86400, ge=1)
    # How long a worker's claim on a running action holds before a redelivered message may run it.
    # Default: longer than one attempt can take (connect + read timeout + 30 s).
    idempotency_lease_s: float | None = Field(None, gt=0)

    # Beat and maintenance (beat/). Intervals in seconds, by task name: OPSQ_BEAT_INTERVALS='{"cleanup": 600}'.
    beat_intervals: dict[str, float] = Field(default_factory=dict)
    beat_backup_hour_utc: int = Field(2, ge=0, le=23)
    stuck_after_s: float = Field(900.0, gt=0)
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
    alert_slack_channel: str | None = None
    flower_url: str | None = None

    sentry_dsn: SecretStr | None = None

    @field_validator("platform_base_url", "slack_base_url", "notion_base_url", "trello_base_url",
                     "gdrive_base_url", "gsheets_base_url", "webhook_base_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    def base_url(self, platform: str) -> str:
        own = getattr(self, f"{platform}_base_url", None)
        if own:
            return own
        if self.platform_base_url:
            return f"{self.platform_base_url}/{platform}"
        return DEFAULT_BASE_URLS.get(platform, "")

    def token(self, platform: str) -> str | None:
        secret: SecretStr | None = getattr(self, f"{platform}_token", None)
        return secret.get_secret_value() if secret else None

    def executor_config(self, platform: str) -> ExecutorConfig:
        extra: dict[str, str] = {}
        if platform == "notion":
            extra["notion_version"] = self.notion_version
        if platform == "trello" and self.trello_api_key:
            extra["api_key"] = self.trello_api_key.get_secret_value()
        if platform == "gsheets":
            extra["spreadsheet_id"] = self.gsheets_spreadsheet_id
        return ExecutorConfig(
            base_url=self.base_url(platform),
            token=self.token(platform),
            connect_timeout_s=self.http_connect_timeout_s,
            read_timeout_s=self.http_read_timeout_s,
            extra=extra,
        )

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
        return self.rate_limits.get(platform) or DEFAULT_RATE_LIMITS.get(platform, RateLimitConfig(rate=0))

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
    return Settings()


def reload_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()
