"""Throughput of noop actions through the whole pipeline against plain Celery tasks, side by side.

Run with `make bench` (pytest -m perf). Both sides use the same Redis, the same worker process
(concurrency 2, prefork, acks_late, prefetch 1) and wait for completion the same way (the result
backend). Rounds alternate so drift on the machine hits both. Prints the ratio; asserts nothing about
speed (timings belong in the report, not in pass/fail).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
from celery.result import ResultSet

pytestmark = pytest.mark.perf

N = int(os.environ.get("OPSQ_BENCH_N", "500"))
ROUNDS = int(os.environ.get("OPSQ_BENCH_ROUNDS", "3"))


def _plain(app, n: int) -> float:
    start = time.perf_counter()
    results = [app.send_task("bench.plain_noop", kwargs={"echo": i}, queue="noop") for i in range(n)]
    ResultSet(results, app=app).join(timeout=300, propagate=True)
    return n / (time.perf_counter() - start)


def _opsq(app, n: int) -> float:
    from workers.client import submit_action

    start = time.perf_counter()
    handles = [submit_action("noop", "noop", {"echo": i}) for i in range(n)]
    ResultSet([app.AsyncResult(h.id) for h in handles], app=app).join(timeout=300, propagate=True)
    return n / (time.perf_counter() - start)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_noop_throughput_against_plain_celery(db, request, redis_client, redis_url, sandbox, sandbox_client,
                                              monkeypatch, tmp_path):
    from tests.conftest import _configure
    from tests.support.worker import WorkerProcess

    if db == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'bench.db'}"
    else:
        service = request.getfixturevalue("postgres")
        if service.url is None:
            pytest.skip(service.reason)
        database_url = service.url
    env = _configure(redis_url, database_url, sandbox, monkeypatch)()
    worker = WorkerProcess(env, "noop", concurrency=2, log_dir=tmp_path, app="tests.perf.baseline_app")
    worker.start()
    try:
        from tests.perf.baseline_app import app

        _plain(app, 50), _opsq(app, 50)  # warm up both paths
        plain, opsq = [], []
        for _ in range(ROUNDS):
            plain.append(_plain(app, N))
            opsq.append(_opsq(app, N))
        ratio = statistics.median(opsq) / statistics.median(plain)
        print(f"\n[{db}] N={N} rounds={ROUNDS} plain celery: {statistics.median(plain):.0f}/s "
              f"{[round(x) for x in plain]}  opsqueue noop: {statistics.median(opsq):.0f}/s "
              f"{[round(x) for x in opsq]}  ratio {ratio:.2f}x")
    finally:
        worker.stop()
