"""Throughput of noop actions through the whole pipeline against plain Celery tasks, side by side.

Run with `make bench` (pytest -m perf). Both sides use the same Redis and the same worker process
(concurrency 2, prefork, acks_late, prefetch 1); each waits the way its users wait (plain Celery on its
result backend, opsqueue on its store with `wait_all`), and every outcome is checked outside the clock.
Rounds alternate so drift on the machine hits both. Two modes: end-to-end (submit and wait, as a service
sees it) and drain (the queue filled first, then the workers timed alone). Prints the ratios and the CPU
per action of each process group; asserts nothing about speed (timings belong in the report).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter

import pytest
from celery.result import ResultSet
from sqlalchemy import func, select

from tests.conftest import _configure
from tests.perf import cpu
from tests.perf.baseline_app import app
from tests.support.worker import WorkerProcess
from workers.client import submit_action, wait_all
from workers.store.db import get_engine
from workers.store.models import ActionRun

pytestmark = pytest.mark.perf

N = int(os.environ.get("OPSQ_BENCH_N", "500"))
ROUNDS = int(os.environ.get("OPSQ_BENCH_ROUNDS", "3"))


class Plain:
    """Plain Celery: send_task, then wait on the result backend, as a Celery user would."""

    @staticmethod
    def submit(app, n: int) -> list:
        return [app.send_task("bench.plain_noop", kwargs={"echo": i}, queue="noop") for i in range(n)]

    @staticmethod
    def wait(app, results: list) -> None:
        ResultSet(results, app=app).join(timeout=300, propagate=True)

    @staticmethod
    def check(results: list) -> None:
        assert all(r.successful() for r in results)


class Opsq:
    """opsqueue: submit_action, then wait on the store (`wait_all`), as an opsqueue user would. Actions
    keep their outcome in the store, not in Celery's result backend (see docs/PERFORMANCE.md)."""

    @staticmethod
    def submit(app, n: int) -> list:
        return [submit_action("noop", "noop", {"echo": i}) for i in range(n)]

    @staticmethod
    def wait(app, handles: list) -> None:
        wait_all(handles, timeout=300)

    @staticmethod
    def check(handles: list) -> None:
        ids = [h.id for h in handles]

        def succeeded() -> int:
            with get_engine().connect() as conn:
                return sum(conn.execute(select(func.count()).where(ActionRun.id.in_(ids[i:i + 500]),
                                                                   ActionRun.status == "succeeded")).scalar()
                           for i in range(0, len(ids), 500))

        # wait_all returns when Redis has every outcome; the worker's write-behind commits the rows just after.
        done = 0
        deadline = time.monotonic() + 10
        while (done := succeeded()) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done == len(ids), f"{len(ids) - done} noop actions did not succeed"


class Meter:
    """Adds up the CPU each process group spent in the timed part of each round (tests/perf/cpu.py)."""

    def __init__(self, worker_pgid: int) -> None:
        self.pgid = worker_pgid
        self.totals: Counter[str] = Counter()
        self.actions = 0

    def __enter__(self) -> Meter:
        self._before = cpu.snapshot(self.pgid) if cpu.available() else Counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if cpu.available():
            self.totals.update(cpu.snapshot(self.pgid) - self._before)

    def per_action(self) -> dict[str, int]:
        return cpu.per_action(Counter(), self.totals, max(self.actions, 1))


def _end_to_end(app, side, n: int, meter: Meter) -> float:
    """Submit n and wait for all: what a service enqueueing work sees."""
    with meter:
        start = time.perf_counter()
        submitted = side.submit(app, n)
        side.wait(app, submitted)
        elapsed = time.perf_counter() - start
    meter.actions += n
    side.check(submitted)  # outside the clock: both sides' outcomes, every one of them
    return n / elapsed


def _drain(app, side, n: int, worker_name: str, meter: Meter) -> float:
    """Fill the queue while the worker does not consume it, then time the workers alone."""
    app.control.cancel_consumer("noop", destination=[worker_name], reply=True, timeout=5)
    submitted = side.submit(app, n)
    with meter:
        start = time.perf_counter()
        app.control.add_consumer("noop", destination=[worker_name], reply=True, timeout=5)
        side.wait(app, submitted)
        elapsed = time.perf_counter() - start
    meter.actions += n
    side.check(submitted)
    return n / elapsed


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_noop_throughput_against_plain_celery(db, request, redis_client, redis_url, sandbox, sandbox_client,
                                              monkeypatch, tmp_path):
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
        pgid = os.getpgid(worker.proc.pid)
        _end_to_end(app, Plain, 50, Meter(pgid)), _end_to_end(app, Opsq, 50, Meter(pgid))  # warm up both
        for mode in ("end-to-end", "drain"):
            plain, opsq = [], []
            plain_cpu, opsq_cpu = Meter(pgid), Meter(pgid)
            for _ in range(ROUNDS):
                if mode == "end-to-end":
                    plain.append(_end_to_end(app, Plain, N, plain_cpu))
                    opsq.append(_end_to_end(app, Opsq, N, opsq_cpu))
                else:
                    plain.append(_drain(app, Plain, N, worker.name, plain_cpu))
                    opsq.append(_drain(app, Opsq, N, worker.name, opsq_cpu))
            ratio = statistics.median(opsq) / statistics.median(plain)
            print(f"\n[{db} {mode}] N={N} rounds={ROUNDS} plain celery: {statistics.median(plain):.0f}/s "
                  f"{[round(x) for x in plain]}  opsqueue noop: {statistics.median(opsq):.0f}/s "
                  f"{[round(x) for x in opsq]}  ratio {ratio:.2f}x")
            if cpu.available():
                print(f"  CPU us/action (timed part): plain {plain_cpu.per_action()}  opsqueue {opsq_cpu.per_action()}")
    finally:
        worker.stop()
