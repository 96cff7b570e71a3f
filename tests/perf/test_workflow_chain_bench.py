"""Steps per second of a long sequential workflow against the same number of independent steps (issue 10).

Run with `pytest -m perf tests/perf/test_workflow_chain_bench.py -s` (OPSQ_BENCH_CHAIN_N steps, default 500).
One real worker (prefork, concurrency 2) consumes `noop` and `control`; each workflow is submitted and waited
for in the store, and every step is checked to have succeeded outside the clock. A chain sent as one Celery
canvas carries the rest of the chain in every message (quadratic in its length); workflows.compiler sends it
in segments of at most OPSQ_WORKFLOW_SEGMENT_LEVELS levels; "one canvas" sets it past the chain's length
(what was sent before segments). Rounds alternate; prints the rates, asserts nothing about speed.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

from tests.conftest import _configure
from tests.support.worker import WorkerProcess
from workers.settings import get_settings, reload_settings
from workflows import state
from workflows.client import submit_workflow
from workflows.status import StepStatus, WorkflowStatus

pytestmark = [pytest.mark.perf, pytest.mark.timeout(3600)]

N = int(os.environ.get("OPSQ_BENCH_CHAIN_N", "500"))
ROUNDS = int(os.environ.get("OPSQ_BENCH_ROUNDS", "2"))
# OPSQ_BENCH_SEGMENT_LEVELS="20,50": segment sizes to compare (default: the setting's default). Read here: the
# test's configuration clears OPSQ_* from the environment.
SIZES = [int(k) for k in os.environ.get("OPSQ_BENCH_SEGMENT_LEVELS", "").split(",") if k]


def _spec(n: int, sequential: bool) -> dict:
    steps = [{"id": f"s{i}", "platform": "noop", "action": "noop", "params": {"echo": i}} for i in range(n)]
    if sequential:
        for i in range(1, n):
            steps[i]["depends_on"] = [f"s{i - 1}"]
    return {"name": "chain" if sequential else "fan", "steps": steps}


def _run(n: int, sequential: bool) -> float:
    start = time.perf_counter()
    handle = submit_workflow(_spec(n, sequential))
    status = handle.wait(timeout=1800).status
    elapsed = time.perf_counter() - start
    assert status == WorkflowStatus.SUCCEEDED, status
    steps = state.steps(handle.id)
    assert len(steps) == n and all(s["status"] == StepStatus.SUCCEEDED for s in steps)
    return n / elapsed


def _segment_levels(monkeypatch, levels: int) -> None:
    # The submitting process cuts the segments (a worker only continues them): this side's setting decides.
    monkeypatch.setenv("OPSQ_WORKFLOW_SEGMENT_LEVELS", str(levels))
    reload_settings()


def test_a_long_chain_runs_in_time_linear_in_its_length(redis_client, redis_url, sandbox, sandbox_client,
                                                         monkeypatch, tmp_path):
    env = _configure(redis_url, f"sqlite:///{tmp_path / 'bench.db'}", sandbox, monkeypatch)()
    worker = WorkerProcess(env, "noop,control", concurrency=2, log_dir=tmp_path)
    worker.start()
    sizes = SIZES or [get_settings().workflow_segment_levels]
    kinds = [("chain, one canvas", n, True, 10 ** 6) for n in (N // 5, N)]
    kinds += [(f"chain, segments of {k}", n, True, k) for k in sizes for n in (N // 5, N)]
    kinds += [("independent steps", N, False, sizes[0])]
    try:
        _run(20, True)  # warm up
        rates: dict[tuple[str, int], list[float]] = {}
        for _ in range(ROUNDS):  # alternated, so drift on the machine hits every kind
            for label, n, sequential, levels in kinds:
                _segment_levels(monkeypatch, levels)
                rates.setdefault((label, n), []).append(_run(n, sequential))
        for (label, n), got in rates.items():
            print(f"\n[workflow] {label:<22} {n:>5} steps: {statistics.median(got):6.1f} steps/s "
                  f"{[round(x, 1) for x in got]}")
    finally:
        worker.stop()
