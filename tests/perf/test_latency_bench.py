"""What a single caller sees, against plain Celery in the same run (issue 12, item 4).

Run with `make bench` (pytest -m perf), or this file alone: `pytest -m perf tests/perf/test_latency_bench.py -s`.
One real worker of tests/perf/baseline_app.py (opsqueue's app plus the plain task `bench.plain_noop`, prefork,
acks_late, prefetch 1) consumes `noop` and `control` (a workflow's bookkeeping tasks: its completion, its
segments), so both sides use the same Redis and the same worker processes. Measured, side by side:

(b) throughput with a wait per handle: submit N, then wait for each in turn (`handle.wait()` as the README
    shows; plain: `[r.get() for r in results]`); rounds alternate;
(c) one action, submit -> result in hand, sequentially, K times: `send_task(...).get()` against
    `submit_action(...).wait()`; p50 and p95; the two sides alternate sample by sample (and which goes first);
(d) a 4-step sequential workflow the same way: `chain(4 x plain_noop).apply_async().get()` against
    `submit_workflow(4 noop steps, each depending on the one before).wait()`;
(f) throughput end to end (submit N, then `wait_all` / `ResultSet.join`) with 2, 4 and 8 prefork processes
    (one worker each), to see how each side scales on this machine.

Every outcome is checked outside the clock. Prints a table: plain, opsqueue, ratio (opsqueue / plain: for
latencies above 1 is slower, for throughput below 1 is slower); asserts nothing about speed. Knobs:
OPSQ_BENCH_N (500), OPSQ_BENCH_ROUNDS (3), OPSQ_BENCH_LATENCY_K (200 actions; workflows: half as many),
OPSQ_BENCH_CONCURRENCY ("2,4,8").
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import chain
from celery.result import AsyncResult

from tests.conftest import _configure
from tests.perf.baseline_app import app, plain_noop
from tests.perf.test_pipeline_bench import Meter, Opsq, Plain, _end_to_end
from tests.support.worker import ROOT, WorkerProcess
from workers.client import submit_action
from workers.status import ActionStatus
from workers.store.actions import ActionView
from workflows import state
from workflows.client import WorkflowHandle, submit_workflow
from workflows.status import StepStatus, WorkflowStatus

pytestmark = [pytest.mark.perf, pytest.mark.timeout(1800)]

# Read here: the test's configuration clears OPSQ_* from the environment.
N = int(os.environ.get("OPSQ_BENCH_N", "500"))
ROUNDS = int(os.environ.get("OPSQ_BENCH_ROUNDS", "3"))
K = int(os.environ.get("OPSQ_BENCH_LATENCY_K", "200"))
K_WORKFLOW = max(K // 2, 1)
CONCURRENCY = [int(c) for c in os.environ.get("OPSQ_BENCH_CONCURRENCY", "2,4,8").split(",") if c]
STEPS = 4
TIMEOUT = 120.0


# -- the two sides, one call each ----------------------------------------------------------------------------

def plain_action(i: int) -> AsyncResult:
    result = app.send_task("bench.plain_noop", kwargs={"echo": i}, queue="noop")
    result.get(timeout=TIMEOUT)
    return result


def opsq_action(i: int) -> ActionView:
    return submit_action("noop", "noop", {"echo": i}).wait(timeout=TIMEOUT)


def plain_chain(i: int) -> AsyncResult:
    result = chain(*(plain_noop.si(echo=i * STEPS + s).set(queue="noop") for s in range(STEPS))).apply_async()
    result.get(timeout=TIMEOUT)
    return result


def workflow_spec(i: int) -> dict[str, object]:
    steps: list[dict[str, object]] = [
        {"id": f"s{s}", "platform": "noop", "action": "noop", "params": {"echo": i * STEPS + s}} for s in range(STEPS)]
    for s in range(1, STEPS):
        steps[s]["depends_on"] = [f"s{s - 1}"]
    return {"name": "latency", "steps": steps}


def opsq_workflow(i: int) -> WorkflowHandle:
    handle = submit_workflow(workflow_spec(i))
    handle.wait(timeout=TIMEOUT)
    return handle


# -- the checks, outside the clock ---------------------------------------------------------------------------

def check_plain(results: list[AsyncResult]) -> None:
    """Every result, and for a chain every task before it (its parents), succeeded."""
    failed = 0
    for result in results:
        node: AsyncResult | None = result
        while node is not None:
            failed += not node.successful()
            node = node.parent
    assert failed == 0, f"{failed} plain task(s) did not succeed"


def check_records(handles: list) -> None:
    """Every record in the store says succeeded. A waiter may return before the worker's write-behind commits
    the record (within OPSQ_OUTCOME_FLUSH_MS), so the store gets a few seconds to say so."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return Opsq.check(handles)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def check_actions(views: list[ActionView]) -> None:
    """What each wait() returned says succeeded, and so does the store."""
    assert all(view.status == ActionStatus.SUCCEEDED for view in views), "a noop action did not succeed"
    check_records(views)


class OpsqSettled(Opsq):
    """The pipeline benchmark's opsqueue side (submit N, wait_all), its outcomes checked by check_records."""

    check = staticmethod(check_records)


def check_workflows(handles: list[WorkflowHandle]) -> None:
    for handle in handles:
        assert handle.status() == WorkflowStatus.SUCCEEDED, f"workflow {handle.id}: {handle.status()}"
        steps = state.steps(handle.id)
        assert len(steps) == STEPS and all(s["status"] == StepStatus.SUCCEEDED for s in steps), steps


# -- the measures ------------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def latencies(plain: Callable[[int], object], opsq: Callable[[int], object], k: int,
              check: tuple[Callable[[list], None], Callable[[list], None]]) -> tuple[list[float], list[float]]:
    """k sequential calls of each side, in milliseconds; the sides alternate call by call, and which one goes
    first alternates too (a side always following the other would inherit its leftovers)."""
    times: dict[str, list[float]] = {"plain": [], "opsq": []}
    outcomes: dict[str, list] = {"plain": [], "opsq": []}
    for i in range(k):
        order = (("plain", plain), ("opsq", opsq)) if i % 2 == 0 else (("opsq", opsq), ("plain", plain))
        for side, call in order:
            start = time.perf_counter()
            outcomes[side].append(call(i))
            times[side].append((time.perf_counter() - start) * 1000)
    check[0](outcomes["plain"])
    check[1](outcomes["opsq"])
    return times["plain"], times["opsq"]


def per_handle_rate(side: str, n: int) -> float:
    """Submit n, then wait for each handle in turn: what a caller that follows its actions one by one sees."""
    start = time.perf_counter()
    if side == "plain":
        results = [app.send_task("bench.plain_noop", kwargs={"echo": i}, queue="noop") for i in range(n)]
        for result in results:
            result.get(timeout=TIMEOUT)
    else:
        handles = [submit_action("noop", "noop", {"echo": i}) for i in range(n)]
        views = [handle.wait(timeout=TIMEOUT) for handle in handles]
    elapsed = time.perf_counter() - start
    if side == "plain":
        check_plain(results)
    else:
        check_actions(views)
    return n / elapsed


def alternated_rates(measure: Callable[[str], float]) -> tuple[list[float], list[float]]:
    plain, opsq = [], []
    for _ in range(ROUNDS):
        plain.append(measure("plain"))
        opsq.append(measure("opsq"))
    return plain, opsq


def wait_all_rates(worker: WorkerProcess) -> tuple[list[float], list[float], Meter, Meter]:
    """(f): the pipeline benchmark's end-to-end mode (submit N, wait_all / ResultSet.join) on this worker."""
    pgid = os.getpgid(worker.proc.pid)  # type: ignore[union-attr]
    _end_to_end(app, Plain, 50, Meter(pgid)), _end_to_end(app, OpsqSettled, 50, Meter(pgid))  # warm up both
    meters = {"plain": Meter(pgid), "opsq": Meter(pgid)}
    sides = {"plain": Plain, "opsq": OpsqSettled}
    plain, opsq = alternated_rates(lambda side: _end_to_end(app, sides[side], N, meters[side]))
    return plain, opsq, meters["plain"], meters["opsq"]


# -- the report ----------------------------------------------------------------------------------------------

def code_version() -> str:
    """The commit, and which of the code's files differ from it in the working tree (others edit it too)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("log", "-1", "--format=%h") or "?"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "executors", "workers", "workflows",
                                         "beat").splitlines()]
    return commit + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


class Table:
    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[str] = []
        self.notes: list[str] = []

    def latency(self, label: str, plain: list[float], opsq: list[float]) -> None:
        for name, q in (("p50", 0.5), ("p95", 0.95)):
            p, o = percentile(plain, q), percentile(opsq, q)
            self.rows.append(f"{label + ' ' + name + ', ms':<44}{p:>10.1f}{o:>10.1f}{o / p:>9.2f}x")
        self.notes.append(f"{label}: {len(plain)} each; plain min/max {min(plain):.1f}/{max(plain):.1f} ms, "
                          f"opsqueue {min(opsq):.1f}/{max(opsq):.1f} ms")

    def rate(self, label: str, plain: list[float], opsq: list[float]) -> None:
        p, o = statistics.median(plain), statistics.median(opsq)
        self.rows.append(f"{label + ', /s':<44}{p:>10.0f}{o:>10.0f}{o / p:>9.2f}x")
        self.notes.append(f"{label}: rounds plain {[round(x) for x in plain]}, opsqueue {[round(x) for x in opsq]}")

    def print(self) -> None:
        print(f"\n{self.title}\n{'measure':<44}{'plain':>10}{'opsqueue':>10}{'ratio':>10}")
        print("\n".join(self.rows))
        print("\n".join(f"  {note}" for note in self.notes))


def start_worker(env: dict[str, str], queues: str, concurrency: int, log_dir: Path) -> WorkerProcess:
    worker = WorkerProcess(env, queues, concurrency=concurrency, log_dir=log_dir, app="tests.perf.baseline_app")
    return worker.start(timeout=90)


def test_latency_and_scaling_against_plain_celery(database_url, redis_client, redis_url, sandbox, sandbox_client,
                                                  monkeypatch, tmp_path):
    db = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    env = _configure(redis_url, database_url, sandbox, monkeypatch)()
    table = Table(f"[{db}] latency bench at {code_version()}: N={N} rounds={ROUNDS} K={K} (workflows {K_WORKFLOW})")
    scaling: list[str] = []
    worker = start_worker(env, "noop,control", CONCURRENCY[0] if CONCURRENCY else 2, tmp_path)
    try:
        latencies(plain_action, opsq_action, 10, (check_plain, check_actions))  # warm up both
        latencies(plain_chain, opsq_workflow, 5, (check_plain, check_workflows))
        table.latency("(c) one action", *latencies(plain_action, opsq_action, K, (check_plain, check_actions)))
        table.latency(f"(d) {STEPS}-step sequential workflow",
                      *latencies(plain_chain, opsq_workflow, K_WORKFLOW, (check_plain, check_workflows)))
        per_handle_rate("plain", 50), per_handle_rate("opsq", 50)  # warm up both
        table.rate(f"(b) N={N}, then wait() per handle", *alternated_rates(lambda side: per_handle_rate(side, N)))
        for i, concurrency in enumerate(CONCURRENCY):
            if i > 0:
                worker.stop()
                worker = start_worker(env, "noop", concurrency, tmp_path)
            plain, opsq, plain_cpu, opsq_cpu = wait_all_rates(worker)
            table.rate(f"(f) N={N}, wait_all, {concurrency} processes", plain, opsq)
            scaling.append(f"  (f) {concurrency} processes, CPU us/action: plain {plain_cpu.per_action()}  "
                           f"opsqueue {opsq_cpu.per_action()}")
    finally:
        worker.stop()
    table.print()
    print("\n".join(scaling))
