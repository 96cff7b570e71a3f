"""Worker memory against a plain Celery worker, side by side (issue 12, item 3).

Run with `pytest -m perf tests/perf/test_worker_memory_bench.py -s`. Real workers, all `-c 2 -P prefork` with
the same Celery, on the same Redis (broker and result backend):

- plain: `celery -A tests.perf.plain_celery_app worker`, an app that imports nothing of opsqueue, running
  OPSQ_BENCH_MEMORY_N (200) noop tasks and a 3-task chain each time opsqueue's worker runs its share;
- opsqueue, beside it, started in turn as `opsq worker` (what deploy/ runs) and as `celery -A
  workers.celery_app worker` (how the tests start it), every task module loaded, running as many noop actions
  and a 3-step workflow.

After the work it prints RSS, PSS and USS of each worker's parent and pool processes (tests/perf/memory.py
says what each counts) and the ratios opsqueue / plain of the pool processes' mean and of the parents.
Parametrised over SQLite and PostgreSQL (psycopg is part of the second). The database is migrated before the
worker starts, as for a worker restarted on a current schema: a worker that migrates a fresh database has
loaded Alembic too. OPSQ_BENCH_AS_DEPLOYED=1 hides from both workers what only the development environment
has (tests/perf/as_deployed). docs/PERFORMANCE.md, "Worker memory", has the figures. It asserts that both
did the work, nothing about memory.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import pytest
from celery import chain
from celery.result import ResultSet
from sqlalchemy import func, select

from tests.conftest import _configure
from tests.perf import memory
from tests.perf.plain_celery_app import make_app
from tests.support.wait import wait_for
from tests.support.worker import WorkerProcess
from workers.client import submit_action, wait_all
from workers.status import ActionStatus
from workers.store.db import get_engine
from workers.store.models import ActionRun
from workflows.client import submit_workflow
from workflows.status import WorkflowStatus

pytestmark = pytest.mark.perf

# Read here: the test's configuration clears OPSQ_* from the environment.
N = int(os.environ.get("OPSQ_BENCH_MEMORY_N", "200"))
HIDE_DEV_TOOLS = os.environ.get("OPSQ_BENCH_AS_DEPLOYED") == "1"


def _plain_work(redis_url: str) -> None:
    app = make_app(redis_url)
    results = [app.send_task("plain.noop", kwargs={"echo": i}) for i in range(N)]
    ResultSet(results, app=app).join(timeout=120, propagate=True)
    assert all(r.successful() for r in results)
    steps = [app.signature("plain.noop", kwargs={"echo": i}, immutable=True) for i in range(3)]
    assert chain(*steps)().get(timeout=60) == {"ok": True, "echo": 2}
    app.close()


def _opsq_work() -> None:
    handles = [submit_action("noop", "noop", {"echo": i}) for i in range(N)]
    wait_all(handles, timeout=120)
    ids = [h.id for h in handles]

    def succeeded() -> bool:
        with get_engine().connect() as conn:
            return conn.execute(select(func.count()).where(ActionRun.id.in_(ids),
                                                           ActionRun.status == ActionStatus.SUCCEEDED)).scalar() == N

    # The records are written behind the outcome a waiter is told (workers.store.outcomes).
    wait_for(succeeded, timeout=30, what=f"{N} succeeded noop actions in the store")
    steps = [{"id": f"s{i}", "platform": "noop", "action": "noop", "params": {"echo": i}} for i in range(3)]
    for i in (1, 2):
        steps[i]["depends_on"] = [f"s{i - 1}"]
    assert submit_workflow({"name": "memory", "steps": steps}).wait(timeout=60).status == WorkflowStatus.SUCCEEDED


def _report(label: str, worker: WorkerProcess) -> tuple[memory.Memory, list[memory.Memory]]:
    assert worker.proc is not None
    parent = memory.memory(worker.proc.pid)
    pool = [memory.memory(pid) for pid in memory.children(worker.proc.pid)]
    print(f"\n[{label}] parent     {parent}")
    for i, child in enumerate(pool, 1):
        print(f"[{label}] pool {i}     {child}")
    return parent, pool


def _mean(pool: list[memory.Memory], field: str) -> float:
    return statistics.fmean(getattr(m, field) for m in pool)


AS_DEPLOYED = Path(__file__).with_name("as_deployed")

# How opsqueue's worker is started: `opsq worker` (what deploy/ runs: Celery's worker command alone) and
# `celery -A workers.celery_app worker` (Celery's `celery` command, which loads its other subcommands and
# the plugins installed, Flower among them, as the plain worker does).
STARTS = {
    "opsq worker": [str(Path(sys.executable).with_name("opsq")), "worker"],
    "celery worker": [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"],
}


def _opsq_worker(env: dict[str, str], how: str, log_dir: Path) -> WorkerProcess:
    name = f"opsq-{how.split()[0]}@membench"
    worker = WorkerProcess(env, "noop,control", concurrency=2, log_dir=log_dir, name=name)
    worker.cmd = [*STARTS[how], "-Q", "noop,control", "-c", "2", "-P", "prefork", "-n", name, "-l", "INFO",
                  "--without-gossip", "--without-mingle"]
    return worker


@pytest.mark.skipif(not memory.available(), reason="reads /proc/<pid>/smaps_rollup (Linux)")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_worker_memory_against_plain_celery(db: str, request: pytest.FixtureRequest, redis_client: object,
                                            redis_url: str, sandbox: object, sandbox_client: object,
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if db == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'bench.db'}"
    else:
        database_url = request.getfixturevalue("pg_database_url")  # skipped when no PostgreSQL answers
    env = _configure(redis_url, database_url, sandbox, monkeypatch)()
    get_engine()  # migrated here, so the worker finds the schema current (see the module's docstring)
    if HIDE_DEV_TOOLS:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(AS_DEPLOYED), env.get("PYTHONPATH")]))
    plain_env = {k: v for k, v in env.items() if not k.startswith("OPSQ_")}
    plain_env["PLAIN_CELERY_REDIS_URL"] = redis_url
    plain = WorkerProcess(plain_env, "plain", concurrency=2, log_dir=tmp_path, name="plain@membench",
                          app="tests.perf.plain_celery_app")
    try:
        plain.start()
        for how in STARTS:
            ours = _opsq_worker(env, how, tmp_path)
            print(f"\n--- {db}, opsqueue started with `{how}` ---")
            try:
                ours.start()
                _plain_work(redis_url)
                _opsq_work()
                time.sleep(1)  # the pool processes' last acks and flushes
                plain_parent, plain_pool = _report("plain celery", plain)
                ours_parent, ours_pool = _report(f"opsqueue, {how}", ours)
            finally:
                ours.stop()
            assert len(plain_pool) == len(ours_pool) == 2
            for field in ("rss", "pss", "uss"):
                ratio = _mean(ours_pool, field) / _mean(plain_pool, field)
                print(f"[{db}, opsqueue ({how}) / plain] {field.upper()} per pool process {ratio:.2f}x  "
                      f"parent {getattr(ours_parent, field) / getattr(plain_parent, field):.2f}x")
    finally:
        plain.stop()
