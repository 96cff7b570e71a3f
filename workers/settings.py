"""All configuration, from OPSQ_* environment variables, through one pydantic-settings class."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSQ_", extra="ignore", case_sensitive=False)

    home: Path = Field(default=Path.home() / ".opsqueue", description="Where embedded state lives.")
    redis_url: str | None = None
    database_url: str | None = None
    auto_migrate: bool = True

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

    sentry_dsn: SecretStr | None = None
    log_level: str = "INFO"

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
