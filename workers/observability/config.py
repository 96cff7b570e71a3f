"""The OPSQ_* settings of logging, Sentry and Flower (kept out of workers.settings on purpose: a broken
platform setting must not switch error reporting off)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_FORMATS = ("json", "text")


class ObservabilitySettings(BaseSettings):
    """The OPSQ_* settings this module reads (kept out of workers.settings on purpose)."""

    model_config = SettingsConfigDict(env_prefix="OPSQ_", extra="ignore", case_sensitive=False)

    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    flower_user: str | None = None
    flower_password: SecretStr | None = None
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_address: str = "0.0.0.0"
    # `opsq exporter` (Prometheus): a bearer token scrapes must present; without one it serves loopback only.
    exporter_token: SecretStr | None = None
    exporter_port: int = Field(9808, ge=1, le=65535)
    exporter_address: str = "127.0.0.1"
    # json or text; anything else falls back to json with a warning (see _log_format), so a typo here
    # cannot switch Sentry off.
    log_format: str = "json"

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @property
    def dsn(self) -> str | None:
        value = self.sentry_dsn.get_secret_value().strip() if self.sentry_dsn else ""
        return value or None


def observability_settings() -> ObservabilitySettings:
    return ObservabilitySettings()

