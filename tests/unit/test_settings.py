"""workers.settings: per-platform base URLs and breakers, the retry cap inside the visibility timeout,
the webhook executor's base URL."""

from __future__ import annotations

import pytest

from workers.settings import Settings


def test_base_urls_per_platform_override_the_shared_one(monkeypatch):
    monkeypatch.setenv("OPSQ_PLATFORM_BASE_URL", "http://127.0.0.1:8765/")
    monkeypatch.setenv("OPSQ_NOTION_BASE_URL", "https://notion.example")
    monkeypatch.setenv("OPSQ_SLACK_TOKEN", "xoxb-secret")
    s = Settings()
    assert s.base_url("slack") == "http://127.0.0.1:8765/slack"
    assert s.base_url("notion") == "https://notion.example"
    assert s.token("slack") == "xoxb-secret"
    assert "xoxb-secret" not in repr(s)
    monkeypatch.delenv("OPSQ_PLATFORM_BASE_URL")
    assert Settings().base_url("trello") == "https://api.trello.com"


def test_per_platform_breaker_settings_inherit_the_shared_ones(monkeypatch):
    monkeypatch.setenv("OPSQ_BREAKER", '{"failure_threshold": 7, "window_s": 20}')
    monkeypatch.setenv("OPSQ_BREAKERS", '{"slack": {"open_s": 5}}')
    s = Settings()
    assert s.breaker_config("slack").model_dump() == {"failure_threshold": 7, "window_s": 20, "open_s": 5,
                                                      "half_open_max": 1}
    assert s.breaker_config("notion").failure_threshold == 7
    monkeypatch.setenv("OPSQ_BREAKERS", '{"slack": {"open_seconds": 5}}')
    with pytest.raises(ValueError, match="unknown field"):
        Settings()


# -- Every retry wait fits in the visibility timeout ---------------------------------------------------


def test_visibility_timeout_must_exceed_the_retry_cap(monkeypatch):
    monkeypatch.setenv("OPSQ_VISIBILITY_TIMEOUT_S", "300")
    monkeypatch.setenv("OPSQ_RETRY_CAP_S", "300")
    with pytest.raises(ValueError, match=r"OPSQ_VISIBILITY_TIMEOUT_S \(300\) must be greater than "
                                         r"OPSQ_RETRY_CAP_S \(300\)"):
        Settings()
    monkeypatch.setenv("OPSQ_RETRY_CAP_S", "299.5")
    assert Settings().retry_cap_s == 299.5
    monkeypatch.delenv("OPSQ_VISIBILITY_TIMEOUT_S")
    monkeypatch.delenv("OPSQ_RETRY_CAP_S")
    assert Settings().visibility_timeout_s > Settings().retry_cap_s  # the defaults


@pytest.mark.parametrize("overrides", [
    {},  # tests/conftest.py make_env: cap 2
    {"OPSQ_VISIBILITY_TIMEOUT_S": "3"},
    {"OPSQ_VISIBILITY_TIMEOUT_S": "3", "OPSQ_IDEMPOTENCY_LEASE_S": "3"},
    {"OPSQ_VISIBILITY_TIMEOUT_S": "3", "OPSQ_IDEMPOTENCY_LEASE_S": "4"},
    {"OPSQ_VISIBILITY_TIMEOUT_S": "2", "OPSQ_IDEMPOTENCY_LEASE_S": "4", "OPSQ_RETRY_CAP_S": "1"},
    {"OPSQ_MAX_ATTEMPTS": "30", "OPSQ_RETRY_BASE_S": "0.05", "OPSQ_RETRY_CAP_S": "0.3",
     "OPSQ_BREAKERS": '{"trello": {"failure_threshold": 3, "window_s": 30, "open_s": 1.5, "half_open_max": 1}}'},
])
def test_the_integration_tests_worker_environments_still_load(monkeypatch, overrides):
    for key, value in {"OPSQ_RETRY_BASE_S": "0.2", "OPSQ_RETRY_CAP_S": "2", "OPSQ_MAX_ATTEMPTS": "4",
                       "OPSQ_HTTP_READ_TIMEOUT_S": "5", **overrides}.items():
        monkeypatch.setenv(key, value)
    Settings()


# -- The webhook token goes only to the configured webhook base URL ------------------------------------


def test_the_webhook_executor_gets_the_webhook_base_url(monkeypatch):
    monkeypatch.delenv("OPSQ_WEBHOOK_BASE_URL", raising=False)
    monkeypatch.delenv("OPSQ_PLATFORM_BASE_URL", raising=False)
    assert Settings().executor_config("webhook").base_url == ""
    monkeypatch.setenv("OPSQ_PLATFORM_BASE_URL", "http://127.0.0.1:9/")
    assert Settings().executor_config("webhook").base_url == "http://127.0.0.1:9/webhook"
    monkeypatch.setenv("OPSQ_WEBHOOK_BASE_URL", "https://hooks.example.com/in/")
    assert Settings().executor_config("webhook").base_url == "https://hooks.example.com/in"
