"""`opsq worker`: Celery's worker command with opsqueue's defaults, its exit status passed on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from workers.cli import worker_cmd

ROOT = Path(__file__).resolve().parents[2]


def test_opsq_worker_exits_with_celerys_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker Celery stopped on an unrecoverable error must exit non-zero (a supervisor restarts it)."""
    from workers.cli import broker  # noqa: PLC0415 - patched below, as opsq worker imports it
    from workers.store import db  # noqa: PLC0415

    monkeypatch.setattr(broker, "ensure_broker", lambda: ("redis://127.0.0.1:1/0", None))
    monkeypatch.setattr(db, "get_engine", lambda: None)
    seen: list[list[str]] = []

    def stopped_on_an_error(app: object, argv: list[str]) -> int:
        seen.append(argv)
        return 1

    monkeypatch.setattr(worker_cmd, "run_celery_worker", stopped_on_an_error)
    result = CliRunner().invoke(worker_cmd.worker, ["-Q", "noop", "-c", "1", "--without-mingle"])
    assert result.exit_code == 1
    assert seen and seen[0][:2] == ["-Q", "noop"] and seen[0][-1] == "--without-mingle"
    monkeypatch.setattr(worker_cmd, "run_celery_worker", lambda app, argv: 0)
    assert CliRunner().invoke(worker_cmd.worker, ["-Q", "noop"]).exit_code == 0


# A Celery app with a stand-in for its worker: what Celery's worker command made of the arguments, and the
# exit status it hands back, without starting anything. In a process of its own, to see what it imported.
RUN = """
import sys
from celery import Celery
from workers.cli.worker_cmd import run_celery_worker

class Worker:
    def __init__(self, **options):
        Worker.options = options
        self.exitcode = 3

    def start(self):
        pass

app = Celery("probe", broker="memory://", set_as_current=False)
app.Worker = Worker
code = run_celery_worker(app, ["-Q", "noop,control", "-c", "2", "-P", "prefork", "-n", "probe@host",
                               "--without-mingle", "--max-tasks-per-child", "7"])
o = Worker.options
print(code, o["queues"], o["concurrency"], o["hostname"], o["without_mingle"], o["max_tasks_per_child"],
      "celery.bin.celery" in sys.modules, "flower" in sys.modules)
"""


def test_celerys_worker_command_runs_without_the_celery_command() -> None:
    """Celery's own parsing of every worker option, and the worker's exit status back; the `celery` command
    (every other subcommand, the installed plugins such as Flower) never loaded, so no pool process holds it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    result = subprocess.run([sys.executable, "-c", RUN], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "['noop',", "'control']", "2", "probe@host", "True", "7", "False",
                                     "False"]
