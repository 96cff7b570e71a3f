"""Size and memory limits: params too large for a message are refused at submit with a clear error; pool
processes are recycled by task count and by memory, from the settings, and validate-env shows both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workers.celery_app import celery_config
from workers.client import check_submission
from workers.errors import SubmitError
from workers.ops.health import validate_env
from workers.settings import Settings, reload_settings


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("OPSQ_REDIS_URL", "redis://127.0.0.1:1/0")
    reload_settings()
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()


def test_params_over_the_limit_are_refused_with_the_setting_named(settings_env):
    settings_env.setenv("OPSQ_MAX_PARAMS_BYTES", "2048")
    reload_settings()
    check_submission("noop", "noop", {"echo": "x" * 1900}, "normal", None)  # under: accepted
    with pytest.raises(SubmitError, match=r"params are \d+ bytes of JSON; the limit is 2048 \(OPSQ_MAX_PARAMS_BYTES\)"):
        check_submission("noop", "noop", {"echo": "x" * 2100}, "normal", None)


def test_the_default_limit_is_a_mebibyte(settings_env):
    assert Settings().max_params_bytes == 1_048_576
    with pytest.raises(SubmitError, match="the limit is 1048576"):
        check_submission("noop", "noop", {"echo": "x" * 1_048_576}, "normal", None)


def test_pool_processes_are_recycled_by_count_and_memory(settings_env):
    conf = celery_config(Settings())
    assert (conf["worker_max_tasks_per_child"], conf["worker_max_memory_per_child"]) == (10_000, 262_144)
    settings_env.setenv("OPSQ_WORKER_MAX_TASKS_PER_CHILD", "0")
    settings_env.setenv("OPSQ_WORKER_MAX_MEMORY_PER_CHILD_KIB", "0")
    conf = celery_config(Settings())
    assert (conf["worker_max_tasks_per_child"], conf["worker_max_memory_per_child"]) == (None, None)  # never


def test_validate_env_shows_the_limits(settings_env):
    shown = {c.name: c.detail for c in validate_env()}
    assert shown["OPSQ_MAX_PARAMS_BYTES"] == "1048576"
    assert shown["OPSQ_WORKER_MAX_TASKS_PER_CHILD"] == "10000"
    assert shown["OPSQ_WORKER_MAX_MEMORY_PER_CHILD_KIB"] == "262144"
