"""Issue 16, item 4: a setting or a service that is wrong is one line `error: ...` naming the cause and the fix,
never a traceback or a library's raw error. Each case runs the real CLI as a subprocess."""

from __future__ import annotations

import pytest

from tests.integration.opsq_cli import opsq

pytestmark = pytest.mark.integration


def one_error_line(out, *names: str) -> str:
    assert out.returncode != 0, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for leak in ("Traceback", "pydantic", "errors.pydantic.dev"):
        assert leak not in out.stderr, out.stderr
    for name in names:
        assert name in lines[0], out.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["abc", "0"])
def test_an_invalid_setting_is_one_line_naming_the_variable(opsq_env_sqlite, value):
    env = opsq_env_sqlite(OPSQ_MAX_ATTEMPTS=value)
    line = one_error_line(opsq(env, "validate-env"), "OPSQ_MAX_ATTEMPTS")
    assert "max_attempts" not in line.replace("OPSQ_MAX_ATTEMPTS", ""), line
    one_error_line(opsq(env, "submit", "noop", "noop"), "OPSQ_MAX_ATTEMPTS")


def test_a_setting_that_is_not_json_is_one_line(opsq_env_sqlite):
    env = opsq_env_sqlite(OPSQ_RATE_LIMITS="{not json")
    one_error_line(opsq(env, "validate-env"), "OPSQ_RATE_LIMITS", "JSON")


def test_empty_json_settings_are_unset(opsq_env_sqlite):
    env = opsq_env_sqlite(OPSQ_RATE_LIMITS="", OPSQ_BREAKERS="", OPSQ_KEY_LIMITS="", OPSQ_BEAT_INTERVALS=" ")
    out = opsq(env, "validate-env")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("scheme", ["postgres://", "postgresql://"])
def test_a_postgres_url_without_a_driver_is_accepted(opsq_env_pg, pg_database_url, scheme):
    # SQLAlchemy removed the postgres:// alias ("Can't load plugin: sqlalchemy.dialects:postgres") and would read
    # postgresql:// as psycopg2, which is not shipped: both are read as postgresql+psycopg://.
    assert pg_database_url.startswith("postgresql+psycopg://")
    env = opsq_env_pg(OPSQ_DATABASE_URL=scheme + pg_database_url.split("://", 1)[1])
    out = opsq(env, "submit", "noop", "noop")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_redis_url_that_is_not_redis_is_one_line(opsq_env_sqlite):
    env = opsq_env_sqlite(OPSQ_REDIS_URL="http://127.0.0.1:6379/0")
    line = one_error_line(opsq(env, "submit", "noop", "noop", "--wait", "--timeout", "10"), "OPSQ_REDIS_URL",
                          "http://")
    assert all(scheme in line for scheme in ("redis://", "rediss://", "sentinel://")), line


def test_redis_down_during_a_workflow_run_names_redis_and_the_url(opsq_env_sqlite, tmp_path):
    spec = tmp_path / "one.json"
    spec.write_text('{"name": "one", "steps": [{"id": "a", "platform": "noop", "action": "noop", "params": {}}]}')
    env = opsq_env_sqlite(OPSQ_REDIS_URL="redis://:hunter2secret@127.0.0.1:1/0")
    line = one_error_line(opsq(env, "workflow", "run", str(spec), "--wait", "--timeout", "10"), "Redis",
                          "OPSQ_REDIS_URL=redis://:**@127.0.0.1:1/0")
    assert "hunter2secret" not in line and "Retry limit exceeded" not in line, line
