"""Limits per key (issue 14), the pure part: rates as operators write them, the kinds of key each platform has,
which key an action is under, and how the settings and the runtime entries combine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from executors.errors import RateLimitedError, RetryableError
from executors.registry import EXECUTORS
from workers.attempt import pause_of
from workers.guards import limits
from workers.settings import RateLimitConfig, Settings, format_rate, parse_rate, reload_settings


@pytest.mark.parametrize(("text", "per_s"), [
    ("1/s", 1.0), ("50/min", 50 / 60), ("1000/h", 1000 / 3600), ("5/10s", 0.5), ("3/2min", 3 / 120),
    ("60/minute", 1.0), ("2 / sec", 2.0), ("100/day", 100 / 86400), ("2", 2.0), ("0.5", 0.5), (3, 3.0),
    ("0", 0.0), ("off", 0.0), ("unlimited", 0.0),
])
def test_rates_as_operators_write_them(text: str | int, per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["fast", "1/y", "-1/s", "1/0s", "1/s/s", "", True])
def test_a_rate_that_does_not_parse_is_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rate", "shown"), [(1.0, "1/s"), (2.5, "2.5/s"), (50 / 60, "50/min"), (1 / 3600, "1/h"),
                                             (0.0, "unlimited")])
def test_rates_are_shown_the_way_they_are_written(rate: float, shown: str) -> None:
    assert format_rate(rate) == shown
    assert rate == 0 or parse_rate(shown) == pytest.approx(rate)


def test_the_kinds_of_key_a_platform_has() -> None:
    slack = EXECUTORS["slack"].limit_key_sources()
    assert slack["channel"] == "channel" and slack["token"] == "token"
    assert EXECUTORS["gsheets"].limit_key_sources()["spreadsheet"] == "spreadsheet_id"
    assert EXECUTORS["webhook"].limit_key_sources()["json"] == "json"  # a param's alias, as submitted
    assert "token" not in EXECUTORS["noop"].limit_key_sources()


def test_settings_refuse_a_kind_the_platform_does_not_have() -> None:
    with pytest.raises(ValidationError, match="no key kind chanel"):
        Settings(key_limits={"slack": {"chanel": {"rate": "1/s"}}})
    with pytest.raises(ValidationError):
        Settings(key_limits={"slack": {"channel": {"rate": "1/x"}}})
    settings = Settings(key_limits={"slack": {"channel": {"rate": "1/s"}, "token": {"rate": "50/min"}}})
    assert settings.key_limits["slack"]["token"].rate == pytest.approx(50 / 60)


def test_runtime_entries_override_the_settings_field_by_field() -> None:
    settings = Settings(rate_limits={"slack": RateLimitConfig(rate=1, burst=10)},
                        key_limits={"slack": {"channel": {"rate": 1, "burst": 2}, "token": {"rate": "50/min"}}})
    plain = limits.resolve(settings, "slack")
    assert (plain.platform.rate, plain.platform_source) == (1, "env")
    assert [(r.kind, r.rate, r.burst, r.concurrency, r.source) for r in plain.rules] == [
        ("channel", 1, 2, 0, "env"), ("token", pytest.approx(50 / 60), 1, 0, "env")]
    runtime = {"": {"rate": 20}, "channel": {"concurrency": 2}, "token": {"rate": 0}, "spreadsheet": {"rate": 1}}
    changed = limits.resolve(settings, "slack", runtime)
    assert (changed.platform.rate, changed.platform.burst, changed.platform_source) == (20, 10, "runtime")
    # channel keeps its rate and gains a concurrency limit; rate 0 turns the token's off; an unknown kind in the
    # runtime config is kept (its key is never found in slack's params: harmless).
    assert [(r.kind, r.rate, r.burst, r.concurrency, r.source) for r in changed.rules] == [
        ("channel", 1, 2, 2, "runtime"), ("spreadsheet", 1, 1, 0, "runtime")]
    assert limits.resolve(settings, "notion").rules == ()


def test_the_runtime_hash_parses_and_skips_what_it_cannot_read() -> None:
    version, config = limits.parse_runtime({b"version": b"7", b"slack": b'{"channel": {"rate": 1}}',
                                            b"notion": b"not json", b"trello": b"[1]"})
    assert version == "7" and config == {"slack": {"channel": {"rate": 1}}}
    assert limits.parse_runtime({}) == ("0", {})


def test_an_actions_key_from_its_params_or_the_platforms_settings() -> None:
    settings = Settings(key_limits={"slack": {"channel": {"rate": 1}, "token": {"concurrency": 3}}},
                        slack_token="xoxb-secret")
    lim = limits.resolve(settings, "slack")
    sources = EXECUTORS["slack"].limit_key_sources()
    values = limits.setting_values(settings, "slack")
    found = limits.keys_of(lim, sources, {"channel": "C123", "text": "hi"}, values)
    assert [(k.kind, k.label, k.digest) for k in found] == [
        ("channel", "C123", limits.digest("C123")),
        ("token", f"sha1:{limits.digest('xoxb-secret')[:8]}", limits.digest("xoxb-secret"))]
    assert all("xoxb" not in k.label for k in found)  # a setting's value is shown by its hash only
    # No channel in the params (another action): not under the channel's limit.
    assert [k.kind for k in limits.keys_of(lim, sources, {"text": "hi"}, values)] == ["token"]
    assert [k.kind for k in limits.keys_of(lim, sources, None, {"token": None})] == []


def test_a_param_falls_back_to_the_setting_of_that_name_and_secrets_are_hashed() -> None:
    settings = Settings(key_limits={"gsheets": {"spreadsheet": {"rate": "60/min"}}, "webhook": {"url": {"rate": 1}}})
    lim = limits.resolve(settings, "gsheets")
    sources = EXECUTORS["gsheets"].limit_key_sources()
    values = limits.setting_values(settings, "gsheets")
    (given,) = limits.keys_of(lim, sources, {"sheet": "S", "values": [1], "spreadsheet_id": "book-1"}, values)
    (default,) = limits.keys_of(lim, sources, {"sheet": "S", "values": [1]}, values)
    assert given.label == "book-1" and default.digest == limits.digest("opsqueue")  # OPSQ_GSHEETS_SPREADSHEET_ID
    hook = limits.resolve(settings, "webhook")
    (url,) = limits.keys_of(hook, EXECUTORS["webhook"].limit_key_sources(),
                            {"url": "https://hooks.example/T0/B0/SECRET"}, {})
    assert url.label.startswith("sha1:") and "SECRET" not in url.label  # a URL may carry its secret
    long = limits.key_of("channel", "channel", {"channel": "c" * 200}, {})
    assert long is not None and len(long[1]) == limits.LABEL_MAX


def test_the_pause_a_429_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSQ_RATE_LIMIT_PAUSE_S", "2")
    monkeypatch.setenv("OPSQ_RETRY_CAP_S", "60")
    reload_settings()
    assert pause_of(RateLimitedError("429", retry_after=3)) == 3
    assert pause_of(RateLimitedError("403 rateLimitExceeded")) == 2  # no Retry-After: the setting
    assert pause_of(RateLimitedError("429", retry_after=86400)) == 60  # capped like a retry's wait
    assert pause_of(RateLimitedError("429", retry_after=0)) is None
    assert pause_of(RetryableError("503", retry_after=5)) is None  # not a rate limit: the breaker's business
