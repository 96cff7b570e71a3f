"""Where a workflow step's own time goes in the store (issue 12, item 2): in-process, no Celery, no worker.

Run with `make bench`, or alone: `pytest -m perf tests/perf/test_step_bookkeeping_bench.py -s`. Submits
OPSQ_BENCH_WORKFLOWS (40) 4-step sequential workflows, then runs each step's bookkeeping as a worker does
(`WorkflowStepHooks.begin`: the claim and the params, one transaction; `.succeeded`: the step's output and, for
the last, the workflow's success, one transaction) and prints the p50 of each phase, how many statements
each makes, and how long those statements took at the server (the rest is Python: building, compiling and
mapping statements, the session, the pool). The latency benchmark (test_latency_bench.py) measures the same
steps end to end against plain Celery; this one says how much of a step is its bookkeeping. Asserts nothing
about speed."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import _configure
from workers.store.db import get_engine
from workflows.client import submit_workflow
from workflows.tasks import WorkflowStepHooks

pytestmark = [pytest.mark.perf, pytest.mark.timeout(600)]

WORKFLOWS = int(os.environ.get("OPSQ_BENCH_WORKFLOWS", "40"))
STEPS = 4
SPEC = {"name": "bookkeeping", "steps": [
    {"id": f"s{i}", "platform": "noop", "action": "noop", "params": {"echo": i},
     **({"depends_on": [f"s{i - 1}"]} if i else {})} for i in range(STEPS)]}


class StatementClock:
    """Counts the statements run in a phase and the time between each one's send and its answer."""

    def __init__(self) -> None:
        self.count = 0
        self.server_s = 0.0
        self._sent = 0.0

    def before(self, *_args: Any) -> None:
        self._sent = time.perf_counter()

    def after(self, *_args: Any) -> None:
        self.count += 1
        self.server_s += time.perf_counter() - self._sent


def test_step_bookkeeping(database_url, redis_url, sandbox, monkeypatch):
    db = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    _configure(redis_url, database_url, sandbox, monkeypatch)()
    hooks = WorkflowStepHooks()
    engine = get_engine()
    phases: dict[str, list[tuple[float, int, float]]] = {"submit": [], "begin": [], "succeeded": []}

    def timed(phase: str, fn: Any) -> Any:
        clock = StatementClock()
        event.listen(engine, "before_cursor_execute", clock.before)
        event.listen(engine, "after_cursor_execute", clock.after)
        started = time.perf_counter()
        try:
            return fn()
        finally:
            phases[phase].append((time.perf_counter() - started, clock.count, clock.server_s))
            event.remove(engine, "before_cursor_execute", clock.before)
            event.remove(engine, "after_cursor_execute", clock.after)

    for n in range(WORKFLOWS + 5):  # the first five warm the caches and the pool, and are not counted
        handle = timed("submit", lambda: submit_workflow(SPEC))
        for i in range(STEPS):
            step = {"workflow_id": handle.id, "step_id": f"s{i}", "last_level": i == STEPS - 1}
            params = timed("begin", lambda step=step, i=i: hooks.begin(step, {"echo": i}, 1))
            assert params == {"echo": i}
            timed("succeeded", lambda step=step, params=params, i=i: hooks.succeeded(step, params, {"echo": i}, None))
        assert handle.status() == "succeeded"
        if n == 4:
            for v in phases.values():
                v.clear()
    print(f"\n[{db}] step bookkeeping, in-process: {WORKFLOWS} workflows of {STEPS} steps")
    print(f"{'phase':12s}{'p50 ms':>8s}{'statements':>12s}{'at the server, ms':>19s}{'the rest, ms':>14s}")
    for phase, samples in phases.items():
        total = statistics.median(s[0] for s in samples) * 1000
        server = statistics.median(s[2] for s in samples) * 1000
        print(f"{phase:12s}{total:8.2f}{statistics.median(s[1] for s in samples):12.0f}{server:19.2f}"
              f"{total - server:14.2f}")
