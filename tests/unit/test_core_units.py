"""Pure logic: backoff, redaction, priorities and routing, settings, CLI param parsing, migrations."""

from __future__ import annotations

import random

import click
import pytest

from workers.queues import (
    ALL_QUEUES,
    PRIORITY_VALUES,
    parse_queue_list,
    priority_name,
    priority_value,
    queue_for,
)
from workers.redaction import REDACTED, contains_redacted, redact
from workers.retry import backoff_delay
from workers.settings import Settings


def test_backoff_is_full_jitter_exponential_and_capped():
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base_s=0.5, cap_s=30.0, rng=rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the whole range, not a fixed step
        assert min(delays) < ceiling * 0.2


def test_backoff_honours_retry_after_up_to_the_cap():
    rng = random.Random(1)
    assert all(backoff_delay(1, base_s=0.1, cap_s=5, retry_after=2, rng=rng) >= 2 for _ in range(100))
    # Above the cap: asked again after the cap, not after a day (the message would outlive the
    # visibility timeout and be redelivered while it waits).
    assert backoff_delay(1, base_s=0.1, cap_s=1, retry_after=600, rng=rng) == 1
    assert backoff_delay(1, base_s=0.1, cap_s=300, retry_after=86400, rng=rng) == 300
    assert all(backoff_delay(9, base_s=1, cap_s=300, retry_after=86400, rng=rng) == 300 for _ in range(50))


def test_redaction_removes_secrets_at_any_depth_and_keeps_the_rest():
    params = {"url": "https://x", "headers": {"Authorization": "Bearer abc", "X-Trace": "1"},
              "nested": [{"api_key": "k", "password": "p", "name": "n"}], "token": "t"}
    out = redact(params)
    assert out["headers"] == {"Authorization": REDACTED, "X-Trace": "1"}
    assert out["nested"] == [{"api_key": REDACTED, "password": REDACTED, "name": "n"}]
    assert out["token"] == REDACTED and out["url"] == "https://x"
    assert "abc" not in str(out) and contains_redacted(out) and not contains_redacted(params)


def test_priorities_map_onto_kombu_redis_steps_with_zero_highest():
    assert PRIORITY_VALUES == {"critical": 0, "high": 3, "normal": 6, "low": 9}
    assert priority_value("critical") < priority_value("low")
    assert [priority_name(v) for v in (0, 3, 6, 9, None)] == ["critical", "high", "normal", "low", "normal"]
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        priority_value("urgent")


def test_each_platform_has_its_own_queue_and_queue_lists_are_checked():
    for platform in ("slack", "notion", "trello", "gdrive", "gsheets", "webhook"):
        assert queue_for(platform) == platform
    assert {"control", "maintenance"} <= set(ALL_QUEUES)
    assert parse_queue_list("slack, notion") == ["slack", "notion"]
    assert parse_queue_list(None) == list(ALL_QUEUES)
    with pytest.raises(ValueError, match="unknown queue"):
        parse_queue_list("slack,slak")


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


def test_cli_params_parse_json_values_and_refuse_bad_pairs():
    from workers.cli.main import parse_params

    assert parse_params(("n=3", "t=hello", "l=[1,2]"), '{"a": true}') == {"a": True, "n": 3, "t": "hello",
                                                                           "l": [1, 2]}
    with pytest.raises(click.BadParameter):
        parse_params(("novalue",), None)
    with pytest.raises(click.BadParameter):
        parse_params((), "[1]")


def test_head_revision_matches_alembic_and_upgrade_creates_tables(tmp_path):
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from workers.store.db import HEAD_REVISION, alembic_config, current_revision, make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert ScriptDirectory.from_config(alembic_config(engine)).get_current_head() == HEAD_REVISION
    assert current_revision(engine) is None
    assert upgrade(engine) == HEAD_REVISION
    assert {"action_runs", "dead_letters"} <= set(inspect(engine).get_table_names())
    assert upgrade(engine) == HEAD_REVISION  # idempotent


def test_action_records_keep_utc_times_on_sqlite(tmp_path, monkeypatch):
    from workers.settings import reload_settings
    from workers.store import actions as store
    from workers.store import db
    from workers.store.models import utcnow

    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 't.db'}")
    reload_settings()
    db.reset_engine()
    store.create(action_id="a1", platform="noop", action="noop", params={"token": "s3cret", "x": 1},
                 priority="normal", queue="noop", max_attempts=3)
    started = utcnow()
    store.mark_succeeded("a1", 1, {"ok": True}, started)
    view = store.get("a1")
    assert view.status == "succeeded" and view.started_at == started
    assert view.created_at.tzinfo is not None and view.duration_s is not None and view.duration_s >= 0
    assert view.params == {"token": "[redacted]", "x": 1}


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
