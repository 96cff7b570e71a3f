"""Review fixes, pure logic: Retry-After cap and the visibility timeout, URL redaction, the webhook
token's scope, UTC conversion, audit targets, dead letters whose URL was redacted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from executors.webhook import token_allowed
from workers.redaction import REDACTED, contains_redacted, kwargs_repr, redact, redact_url
from workers.settings import Settings
from workers.store.models import as_utc

SLACK_HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


# -- Settings: every retry wait fits in the visibility timeout -----------------------------------------


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


# -- Redaction of URLs that carry secrets in their path ------------------------------------------------


def test_webhook_urls_keep_only_scheme_host_and_port_when_stored():
    params = {"url": SLACK_HOOK, "json": {"text": "hi", "url": "http://example.com/a?b=c"},
              "compensation_url": "http://user:pw@127.0.0.1:8080/undo?sig=abc#frag",
              "webhook_url": "https://[::1]:9000/x", "link": "https://keep.example/path",
              "headers": {"Authorization": "Bearer t"}}
    out = redact(params, urls=True)
    assert out["url"] == "https://hooks.slack.com/[redacted]"
    assert out["json"]["url"] == "http://example.com/[redacted]"  # any depth
    assert out["compensation_url"] == "http://127.0.0.1:8080/[redacted]"  # no user:password either
    assert out["webhook_url"] == "https://[::1]:9000/[redacted]"
    assert out["link"] == "https://keep.example/path"  # only the URL keys
    assert out["headers"] == {"Authorization": REDACTED}
    assert "SECRET" not in str(out) and "sig=abc" not in str(out) and "pw" not in str(out)
    assert contains_redacted(out) and not contains_redacted(params)


def test_url_redaction_leaves_what_has_no_secret_and_is_opt_in():
    assert redact_url("https://example.com") == "https://example.com"
    assert redact_url("https://example.com/") == "https://example.com/"
    assert redact_url("ftp://example.com/secret") == "ftp://example.com/secret"
    assert redact_url("not a url") == "not a url"
    assert redact_url("http://h:notaport/x") == "http://h/[redacted]"
    assert redact_url("http://[::1/x") == "http://[::1/x"  # not parseable: no host to keep, nothing to call
    assert redact({"url": 3, "compensation_url": None}, urls=True) == {"url": 3, "compensation_url": None}
    # Results and workflow outputs keep their URLs: a later step's template may use them.
    assert redact({"card_id": "c1", "url": "https://trello.com/c/abc/1-card"}) == {
        "card_id": "c1", "url": "https://trello.com/c/abc/1-card"}


def test_contains_redacted_sees_the_url_form_only_on_http_urls():
    assert contains_redacted({"a": [{"url": "https://h.example/[redacted]"}]})
    assert contains_redacted(("x", REDACTED))
    assert not contains_redacted({"text": "see /[redacted]"})
    assert not contains_redacted({"url": "https://h.example/redacted"})


def test_logged_kwargs_hide_the_webhook_path():
    shown = kwargs_repr({"action_id": "a1", "params": {"url": SLACK_HOOK, "json": {"n": 1}}})
    assert "XXXXSECRETXXXX" not in shown and "https://hooks.slack.com/[redacted]" in shown


def test_a_stored_webhook_action_keeps_no_secret_path_and_its_dead_letter_asks_for_params(tmp_path, monkeypatch):
    from workers.errors import SubmitError
    from workers.ops import dlq
    from workers.settings import reload_settings
    from workers.store import actions as store
    from workers.store import db

    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 't.db'}")
    reload_settings()
    db.reset_engine()
    store.create(action_id="w1", platform="webhook", action="post", params={"url": SLACK_HOOK, "json": {"n": 1}},
                 priority="normal", queue="webhook", max_attempts=3)
    assert store.get("w1").params == {"url": "https://hooks.slack.com/[redacted]", "json": {"n": 1}}
    store.mark_failed("w1", 3, "502", "retryable", dead_letter=True)
    (dead,) = store.dead_letters()
    with pytest.raises(SubmitError, match="--params-json"):
        dlq.replay(dead.id)
    assert store.dead_letter(dead.id).replayed_at is None  # refused before anything was claimed
    from workers.store import audit

    assert all("XXXXSECRETXXXX" not in str(e) for e in audit.entries())


# -- The webhook token goes only to the configured webhook base URL ------------------------------------


@pytest.mark.parametrize(("url", "base", "allowed"), [
    ("https://hooks.example.com/in/abc", "https://hooks.example.com", True),
    ("https://hooks.example.com/in/abc", "https://hooks.example.com/in", True),
    ("https://hooks.example.com/in", "https://hooks.example.com/in/", True),
    ("https://HOOKS.example.com/in/x", "https://hooks.example.com/in", True),
    ("https://hooks.example.com/inside/x", "https://hooks.example.com/in", False),  # not a segment boundary
    ("https://hooks.example.com.evil.net/in/x", "https://hooks.example.com", False),
    ("https://evil.net/?https://hooks.example.com", "https://hooks.example.com", False),
    ("http://hooks.example.com/in/x", "https://hooks.example.com/in", False),  # another scheme
    ("https://hooks.example.com:8443/in/x", "https://hooks.example.com/in", False),  # another port
    ("https://hooks.example.com/in/../admin", "https://hooks.example.com/in", False),
    ("https://hooks.example.com/in/%2e%2e/admin", "https://hooks.example.com/in", False),
    ("https://u:p@hooks.example.com/in/x", "https://hooks.example.com/in", False),
    ("https://hooks.example.com/in/x", "", False),  # no webhook base URL configured: never
    ("https://hooks.example.com/in/x", None, False),
])
def test_token_allowed(url, base, allowed):
    assert token_allowed(url, base) is allowed


def test_the_webhook_executor_gets_the_webhook_base_url(monkeypatch):
    monkeypatch.delenv("OPSQ_WEBHOOK_BASE_URL", raising=False)
    monkeypatch.delenv("OPSQ_PLATFORM_BASE_URL", raising=False)
    assert Settings().executor_config("webhook").base_url == ""
    monkeypatch.setenv("OPSQ_PLATFORM_BASE_URL", "http://127.0.0.1:9/")
    assert Settings().executor_config("webhook").base_url == "http://127.0.0.1:9/webhook"
    monkeypatch.setenv("OPSQ_WEBHOOK_BASE_URL", "https://hooks.example.com/in/")
    assert Settings().executor_config("webhook").base_url == "https://hooks.example.com/in"


# -- One UTC helper; audit targets fit their column ----------------------------------------------------


def test_as_utc():
    naive = datetime(2024, 5, 1, 12, 0)
    assert as_utc(naive) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC) and as_utc(naive).tzinfo is UTC
    new_york = datetime(2024, 5, 1, 8, 0, tzinfo=timezone(timedelta(hours=-4)))
    assert as_utc(new_york).isoformat() == "2024-05-01T12:00:00+00:00"
    assert as_utc(None) is None and as_utc("x") == "x"


def test_audit_digest_does_not_depend_on_the_zone_it_was_read_in():
    from workers.store.audit import digest

    at = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    as_read_in_new_york = at.astimezone(timezone(timedelta(hours=-4)))
    assert digest("0" * 64, at, "a", "x", None, {}) == digest("0" * 64, as_read_in_new_york, "a", "x", None, {})
    assert digest("0" * 64, at, "a", "x", None, {}) == digest("0" * 64, at.replace(tzinfo=None), "a", "x", None, {})


def test_long_audit_targets_are_cut_to_the_column(tmp_path, monkeypatch):
    from workers.settings import reload_settings
    from workers.store import audit, db

    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 'a.db'}")
    reload_settings()
    db.reset_engine()
    audit.append("backup_restore", "/very/long/path/" + "x" * 400, {"rows": 1}, actor="t")
    (entry,) = audit.entries()
    assert len(entry["target"]) == 200 and entry["target"].startswith("/very/long/path/xxx")
    assert audit.verify().ok
