"""workers.celery_app: importing any task module touches no broker; the app configures itself on first use,
and says plainly when there is no Redis to use."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.celery_app import OpsqCelery, celery_config
from workers.settings import Settings, reload_settings

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    env["OPSQ_HOME"] = str(home)  # empty: no embedded Redis to be found there
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_every_task_module_imports_with_no_redis_configured(tmp_path):
    result = _python("import workers.tasks, workflows.tasks, beat.tasks\n"
                     "from workers.celery_app import app\n"
                     "assert not app.configured, 'importing configured the app'\n"
                     "print('imported')", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_first_use_without_redis_names_the_setting(tmp_path):
    result = _python("from workers.celery_app import app\n"
                     "from workers.errors import ConfigError\n"
                     "try:\n"
                     "    app.conf.broker_url\n"
                     "except ConfigError as exc:\n"
                     "    print('ConfigError:', exc)\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ConfigError: no Redis: set OPSQ_REDIS_URL" in result.stdout


@pytest.fixture
def probe_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPSQ_REDIS_URL", "redis://127.0.0.1:1/0")
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


def test_configured_from_the_settings_on_first_use(probe_settings):
    app = OpsqCelery("probe")
    assert not app.configured
    assert app.conf.broker_url == "redis://127.0.0.1:1/0"  # nothing is connected to: only read
    assert app.configured
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert celery_config(Settings())["include"] == ["workers.tasks", "workflows.tasks", "beat.tasks"]


@pytest.mark.parametrize("first_use", ["router", "send_task_options", "conf"])
def test_any_first_use_configures_the_app_once(probe_settings, first_use):
    """`send_task` by name (documented for services that do not import opsqueue) reaches the router first;
    configuring must not call back into it."""
    app = OpsqCelery("probe")
    if first_use == "router":
        router = app.amqp.router
        assert router.route({}, "opsq.execute_action", kwargs={"platform": "slack"})["queue"].name == "slack"
    elif first_use == "send_task_options":
        assert app.amqp.queues["noop"].name == "noop"
    else:
        assert app.conf.task_default_queue == "control"
    assert app.configured and app.conf.broker_url == "redis://127.0.0.1:1/0"


@pytest.mark.parametrize("module", ["workers.client", "workers.enqueue", "workflows.client", "beat.maintenance"])
def test_the_client_side_modules_import_with_no_redis_configured(tmp_path, module):
    result = _python(f"import {module}", tmp_path)
    assert result.returncode == 0, result.stderr


LOG_SETUP = (
    "import logging\n"
    "{prelude}"
    "app.log.setup(loglevel='INFO', redirect_stdouts=False)\n"
    "print(type(logging.getLogger().handlers[0].formatter).__name__)\n"
)


def test_a_service_importing_the_client_keeps_its_own_workers_logging(tmp_path):
    """A host app's worker (here: its logging set-up, the first thing a worker does) gets none of opsqueue's
    hooks just because the service imported opsqueue's client API."""
    prelude = "import workers.client, workflows.client\nfrom celery import Celery\napp = Celery('host')\n"
    result = _python("import os\nos.environ['OPSQ_REDIS_URL'] = 'redis://127.0.0.1:1/0'\n"
                     + LOG_SETUP.format(prelude=prelude), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != "JsonFormatter"


def test_opsqueues_own_app_gets_its_json_logs(tmp_path):
    prelude = "from workers.celery_app import app\n"
    result = _python("import os\nos.environ['OPSQ_REDIS_URL'] = 'redis://127.0.0.1:1/0'\n"
                     + LOG_SETUP.format(prelude=prelude), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "JsonFormatter"


# What a worker process never uses, so it must not hold it (docs/PERFORMANCE.md, "Worker memory"): Alembic
# (a current schema needs no migration), Flower and the `celery` command's other subcommands (opsq worker runs
# Celery's worker command alone), the sandbox.
NEVER_IN_A_WORKER = ("alembic", "flower", "click_repl", "prompt_toolkit", "celery.bin.celery", "executors.sandbox")
# What it loads only when it needs it: sentry_sdk with a DSN, httpcore with the first HTTP request.
ON_FIRST_USE = ("sentry_sdk", "httpcore")


def test_a_worker_loads_nothing_it_never_uses(tmp_path):
    result = _python("import sys\n"
                     "import workers.celery_app, workers.tasks, workflows.tasks, beat.tasks\n"
                     "from workers.cli import main, worker_cmd\n"
                     "main.register()\n"
                     f"print(sorted(m for m in {NEVER_IN_A_WORKER!r} if m in sys.modules))", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_what_a_worker_needs_only_sometimes_is_loaded_when_needed(tmp_path):
    result = _python("import sys\n"
                     "import workers.celery_app, workers.tasks, workflows.tasks, beat.tasks\n"
                     "from workers import executor_pool\n"
                     "from workers.observability import sentry\n"
                     "executor_pool.executor('noop')\n"
                     f"print(sorted(m for m in {ON_FIRST_USE!r} if m in sys.modules), sentry.sentry_on())", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] None"
