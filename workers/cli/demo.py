"""`opsq demo`: the product end to end on one machine, through real Celery, Redis and HTTP.

It starts an embedded Redis, the platform sandbox and a worker process, runs the scenarios, prints a
summary and stops everything it started. Nothing leaves the machine: every platform is the sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from workers.dev import stack
from workers.queues import CONTROL_QUEUE, PLATFORM_QUEUES
from workers.status import ActionStatus
from workflows.status import ApprovalStatus, CompensationStatus, StepStatus, WorkflowStatus

DEMO_QUEUES = (*PLATFORM_QUEUES, CONTROL_QUEUE)
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

PRIORITY_COLOURS = {"critical": "red", "high": "yellow", "normal": "cyan", "low": "blue"}


def ok(text: str) -> str:
    return click.style("✓ ", fg="green", bold=True) + text


def bad(text: str) -> str:
    return click.style("✗ ", fg="red", bold=True) + text


def heading(n: int | str, title: str) -> None:
    click.echo()
    click.echo(click.style(f"── Scenario {n}: {title} ", fg="magenta", bold=True) + click.style("─" * 30, fg="magenta"))


def prio(name: str) -> str:
    return click.style(f"{name:<8}", fg=PRIORITY_COLOURS.get(name, "white"), bold=name == "critical")


@dataclass
class DemoRun:
    quick: bool
    sandbox_url: str
    worker_name: str
    workdir: Path
    action_ids: list[str] = field(default_factory=list)
    #: action id -> why it fails on purpose (the summary tells them from real failures)
    expected_failures: dict[str, str] = field(default_factory=dict)
    scenarios: list[dict[str, Any]] = field(default_factory=list)
    started_wall: float = field(default_factory=time.time)
    flower_url: str | None = None

    def track(self, handle: Any) -> Any:
        self.action_ids.append(handle.id)
        return handle


class DemoEnvironment:
    """Everything the demo starts, and stops again, whatever happens."""

    def __init__(self, use_configured: bool, flower: bool = False) -> None:
        self.use_configured = use_configured
        self.flower = flower
        self.flower_proc: subprocess.Popen[bytes] | None = None
        self.flower_url: str | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="opsq-demo-"))
        self.sandbox: Any = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.redis: Any = None
        self.worker_name = f"demo-{os.getpid()}@localhost"
        self.worker_log = self.tmp / "worker.log"

    def __enter__(self) -> DemoEnvironment:
        from executors.sandbox.server import SandboxServer
        from workers.cli.broker import ensure_broker
        from workers.settings import reload_settings

        if not self.use_configured:
            for key in [k for k in os.environ if k.startswith("OPSQ_")]:
                del os.environ[key]
            os.environ["OPSQ_HOME"] = str(self.tmp)
        self.sandbox = SandboxServer().start()
        stack.point_at_sandbox(self.sandbox.url)  # every platform, with the sandbox's tokens
        os.environ.setdefault("OPSQ_RETRY_BASE_S", "0.5")
        os.environ.setdefault("OPSQ_RETRY_CAP_S", "5")
        os.environ.setdefault("OPSQ_MAX_ATTEMPTS", "10")
        os.environ.setdefault("OPSQ_BREAKERS", '{"gdrive": {"failure_threshold": 3, "window_s": 30, "open_s": 2}}')
        url, self.redis = ensure_broker()
        reload_settings()
        from workers.store.db import get_engine

        get_engine()
        self.worker = stack.start_worker(self.worker_name, DEMO_QUEUES, 2, self.worker_log, os.environ)
        stack.wait_ready(self.worker, self.worker_log, "the demo worker")
        if self.flower:
            self._start_flower()
        click.echo(click.style("opsqueue demo", bold=True) + f"  broker {url}  sandbox {self.sandbox.url}")
        if self.flower_url:
            click.echo(f"Flower (local only, no password): {click.style(self.flower_url, bold=True)}")
        click.echo(f"worker {self.worker_name} (2 processes) consuming {', '.join(DEMO_QUEUES)}")
        return self

    def _start_flower(self) -> None:
        from workers.dev.embedded_redis import free_port

        port = free_port()
        self.flower_proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli.main", "flower", "--unauthenticated-local", "--port", str(port)],
            env=dict(os.environ), stdout=(self.tmp / "flower.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.flower_url = f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        stack.stop_process(self.flower_proc, 10)
        stack.stop_process(self.worker)
        if self.sandbox:
            self.sandbox.stop()
        if self.redis:
            self.redis.stop()
        if exc[0] is None and not self.use_configured:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            click.echo(f"demo files kept in {self.tmp} (worker log: {self.worker_log})", err=True)


def scenario_routing(run: DemoRun) -> None:
    from workers.client import submit_action

    heading(1, "routing: one action to each platform, each on its own queue")
    webhook = {"url": f"{run.sandbox_url}/webhook/demo/deployed", "json": {"service": "opsqueue", "ok": True}}
    actions: list[tuple[str, str, dict[str, Any]]] = [
        ("slack", "send_message", {"channel": "#ops", "text": "opsqueue demo says hello"}),
        ("notion", "create_task", {"database_id": "demo-db", "title": "Review the demo"}),
        ("trello", "create_card", {"list_id": "5f1e0a9c3b2d4e6f7a8b9c0d", "name": "Ship opsqueue"}),
        ("gdrive", "create_file", {"name": "demo-report.pdf", "mime_type": "application/pdf"}),
        ("gsheets", "append_row", {"sheet": "demo", "values": ["demo", 1, True]}),
        ("webhook", "post", webhook),
    ]
    handles = [(run.track(submit_action(p, a, params, priority="normal")), p, a) for p, a, params in actions]
    passed = 0
    for handle, platform, action in handles:
        view = handle.wait(60)
        result = json.dumps(view.result, sort_keys=True) if view.result else view.error
        what = f"{platform}.{action}"
        line = f"{what:<20} queue={click.style(f'{view.queue:<8}', bold=True)} {view.status}  {result}"
        if view.status == ActionStatus.SUCCEEDED:
            passed += 1
            click.echo(ok(line))
        else:
            click.echo(bad(line))
    run.scenarios.append({"scenario": "1", "name": "routing", "passed": passed == len(handles)})


def scenario_priority(run: DemoRun) -> None:
    from kombu.transport.redis import Transport as RedisTransport

    from executors.sandbox.server import SandboxClient
    from workers.celery_app import app
    from workers.client import submit_action

    heading(2, "priority: critical actions overtake queued low ones")
    lows = 4 if run.quick else 8
    criticals = 2
    # Pause the slack queue (Celery remote control) so the queue fills up as it would under load.
    app.control.cancel_consumer("slack", destination=[run.worker_name], reply=True, timeout=5)
    # The cancel is done, but a BRPOP the worker sent before it still waits (up to kombu's brpop_timeout): a
    # message popped there has no consumer any more and is put back at the far end of the queue, out of
    # order. The backlog is queued once that BRPOP has run out.
    time.sleep(RedisTransport.brpop_timeout + 0.5)
    sandbox = SandboxClient(run.sandbox_url)
    sandbox.clear_requests()
    for i in range(lows):
        run.track(submit_action("slack", "send_message", {"channel": "#bulk", "text": f"low #{i + 1}"},
                                priority="low"))
    handles = [run.track(submit_action("slack", "send_message", {"channel": "#incident", "text": f"critical #{i + 1}"},
                                       priority="critical")) for i in range(criticals)]
    click.echo(f"queued {lows} low, then {criticals} critical actions while the slack queue was paused; a worker "
               "of one process takes the queue over, so the platform sees them one at a time")
    # One process: the demo's worker has two, which run two messages at once, and the sandbox would see them
    # in whichever order they arrive (low #2 before low #1), which says nothing about priorities.
    log = run.workdir / "priority-worker.log"
    single = stack.start_worker(f"demo-priority-{os.getpid()}@localhost", ("slack",), 1, log, os.environ)
    try:
        stack.wait_ready(single, log, "the scenario's worker")
        for h in handles:
            h.wait(60)
        deadline = time.monotonic() + 60
        while len(sandbox.requests(platform="slack")) < lows + criticals and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stack.stop_process(single)
        app.control.add_consumer("slack", destination=[run.worker_name], reply=True, timeout=5)
    order = [r["body"]["text"] for r in sandbox.requests(platform="slack")]
    for n, text in enumerate(order, 1):
        click.echo(f"  {n:>2}. {prio(text.split()[0])} {text}")
    # Highest priority first, and within one priority first in, first out.
    expected = [f"critical #{i + 1}" for i in range(criticals)] + [f"low #{i + 1}" for i in range(lows)]
    passed = order == expected
    click.echo(ok("critical actions ran first, then the low ones in the order they were queued") if passed
               else bad(f"not in priority order (expected: {', '.join(expected)})"))
    run.scenarios.append({"scenario": "2", "name": "priority", "passed": passed, "order": order})


def scenario_retry(run: DemoRun) -> None:
    from executors.sandbox.server import SandboxClient
    from workers.client import submit_action

    heading(4, "retry: the platform fails twice with 503, then succeeds")
    sandbox = SandboxClient(run.sandbox_url)
    sandbox.clear_requests()
    sandbox.fault("trello", "error", status=503, times=2)
    card = {"list_id": "5f1e0a9c3b2d4e6f7a8b9c0d", "name": "Flaky"}
    view = run.track(submit_action("trello", "create_card", card)).wait(60)
    calls = sandbox.requests(platform="trello")
    previous = None
    for n, call in enumerate(calls, 1):
        gap = f"  (backoff {call['started'] - previous:.2f}s)" if previous else ""
        colour = "green" if call["status"] == 200 else "red"
        click.echo(f"  attempt {n}: HTTP {click.style(str(call['status']), fg=colour, bold=True)}{gap}")
        previous = call["finished"]
    passed = view.status == ActionStatus.SUCCEEDED and view.attempts == 3
    click.echo((ok if passed else bad)(f"action {view.status} after {view.attempts} attempts"))
    run.scenarios.append({"scenario": "4", "name": "retry", "passed": passed, "attempts": view.attempts})


def scenario_breaker(run: DemoRun) -> None:
    from executors.sandbox.server import SandboxClient
    from workers.client import submit_action
    from workers.guards import breaker
    from workers.guards.base import BreakerState

    heading("4b", "circuit breaker: a platform goes down, the breaker stops the hammering")
    sandbox = SandboxClient(run.sandbox_url)
    sandbox.clear_requests()
    breaker.reset("gdrive", "demo", "start of scenario")
    cfg = breaker.status("gdrive")
    sandbox.fault("gdrive", "error", status=503)
    n, outage_s = (6, 5.0) if run.quick else (12, 8.0)
    started = time.time()
    handles = [run.track(submit_action("gdrive", "create_file", {"name": f"report-{i}.pdf"})) for i in range(n)]
    click.echo(f"gdrive is down (every call answers 503) for {outage_s:g}s; submitted {n} actions "
               f"(breaker: open after {cfg.failure_threshold} failures, probe after {cfg.open_s:g}s)")
    shown = 0
    while time.time() - started < outage_s:
        time.sleep(0.1)
        shown = _print_transitions(breaker, started, shown)
    during = len(sandbox.requests(platform="gdrive"))
    cycles = sum(1 for e in breaker.history("gdrive", limit=200)
                 if e["at"] >= started and e["to"] == BreakerState.HALF_OPEN)
    click.echo(f"  {n} actions waited; {during} calls reached the failing platform in {outage_s:g}s "
               f"({cfg.failure_threshold} to open it, then one probe per cool-down). Bringing gdrive back.")
    sandbox.clear_faults("gdrive")
    views = [h.wait(90) for h in handles]
    _print_transitions(breaker, started, shown)
    succeeded = sum(v.status == ActionStatus.SUCCEEDED for v in views)
    # At most: the threshold, one probe per half-open, and what was in flight when it opened (2 processes).
    bound = cfg.failure_threshold + cycles * cfg.half_open_max + 2
    passed = succeeded == n and breaker.status("gdrive").state == BreakerState.CLOSED and during <= bound
    click.echo((ok if passed else bad)(f"{succeeded}/{n} actions completed after a probe closed the breaker"))
    run.scenarios.append({"scenario": "4b", "name": "circuit breaker", "passed": passed,
                          "calls_during_outage": during, "bound": bound, "actions": n})


def _print_transitions(breaker: Any, since: float, shown: int) -> int:
    from workers.guards.base import BreakerState

    entries = [e for e in reversed(breaker.history("gdrive", limit=200)) if e["at"] >= since]
    colours = {BreakerState.OPEN: "red", BreakerState.HALF_OPEN: "yellow", BreakerState.CLOSED: "green"}
    for e in entries[shown:]:
        to = click.style(f"{e['to'].upper():<9}", fg=colours.get(e["to"], "white"), bold=True)
        click.echo(f"  +{e['at'] - since:5.2f}s  breaker {to} {e['reason']}")
    return len(entries)


def scenario_duplicates(run: DemoRun) -> None:
    from executors.sandbox.server import SandboxClient
    from workers.client import submit_action

    heading("4c", "duplicate submits: one idempotency key, one platform call")
    sandbox = SandboxClient(run.sandbox_url)
    sandbox.clear_requests()
    key = f"invoice-A-1001-{os.getpid()}"
    handles = [submit_action("notion", "create_task", {"database_id": "finance", "title": "Pay invoice A-1001"},
                             idempotency_key=key) for _ in range(3)]
    run.track(handles[0])
    for n, h in enumerate(handles, 1):
        note = "duplicate: first action returned, nothing enqueued" if h.deduplicated else "enqueued"
        click.echo(f"  submit {n}: action {h.id}  ({note})")
    handles[0].wait(60)
    time.sleep(0.3)
    calls = len(sandbox.requests(platform="notion"))
    passed = len({h.id for h in handles}) == 1 and calls == 1
    click.echo((ok if passed else bad)(f"3 submits, 1 action, {calls} call to notion"))
    run.scenarios.append({"scenario": "4c", "name": "duplicate submits", "passed": passed, "platform_calls": calls})


def _example(name: str) -> Path:
    """The demo's workflows are the example files in docs/examples (run the demo from a checkout)."""
    return EXAMPLES / name


def _track_workflow(run: DemoRun, handle: Any) -> None:
    from workflows import state

    run.action_ids.extend(s["action_id"] for s in state.steps(handle.id)
                          if s["status"] in (StepStatus.SUCCEEDED, StepStatus.FAILED))


def _print_steps(handle: Any) -> None:
    from workflows import state

    for st in sorted(state.steps(handle.id), key=lambda x: (x["completed_seq"] or 99, x["level"])):
        mark = {StepStatus.SUCCEEDED: ok, StepStatus.FAILED: bad}.get(st["status"], lambda t: "  " + t)
        took = ""
        if st["started_at"] and st["finished_at"]:
            took = f" {(st['finished_at'] - st['started_at']).total_seconds() * 1000:.0f} ms"
        what = f"{st['platform']}.{st['action']}"
        click.echo(mark(f"{st['step_id']:<15} {what:<20} {st['status']}{took}"))


def scenario_workflow(run: DemoRun) -> None:
    from workflows.client import submit_workflow
    from workflows.spec import levels, load

    heading(3, "multi-step workflow: invoice -> sheet -> Slack -> Notion, outputs flowing through templates")
    spec = load(_example("invoice.yaml"))
    click.echo("  " + " -> ".join(", ".join(lv) for lv in levels(spec)))
    handle = submit_workflow(spec, {"order_id": f"A-{1000 + os.getpid() % 1000}"})
    status = handle.wait(120).status
    _track_workflow(run, handle)
    _print_steps(handle)
    passed = status == WorkflowStatus.SUCCEEDED
    click.echo((ok if passed else bad)(f"workflow {handle.id} {status}"))
    run.scenarios.append({"scenario": "3", "name": "workflow", "passed": passed, "workflow_id": handle.id})


def scenario_rollback(run: DemoRun) -> None:
    from executors.sandbox.server import SandboxClient
    from workflows import state
    from workflows.client import submit_workflow

    heading(5, "rollback: the payment step fails, completed steps are undone newest first")
    sandbox = SandboxClient(run.sandbox_url)
    sandbox.fault("webhook", "error", status=402, match="/payments/")
    before = sandbox.state()
    # The example's payment URL is the sandbox's, from the worker's settings (`{{ settings.webhook_base_url }}`).
    handle = submit_workflow(_example("order-rollback.yaml"), {})
    status = handle.wait(120, until=(WorkflowStatus.ROLLED_BACK, WorkflowStatus.ROLLBACK_FAILED,
                                       WorkflowStatus.SUCCEEDED)).status
    sandbox.clear_faults("webhook")
    _track_workflow(run, handle)
    _print_steps(handle)
    click.echo("  rollback, in order:")
    for c in state.compensations(handle.id):
        mark = ok if c["status"] in (CompensationStatus.DONE, CompensationStatus.SKIPPED) else bad
        what = f"{c['position']}. undo {c['step_id']:<15} ({c['platform']}.{c['action']})"
        click.echo("  " + mark(f"{what} {c['status']}"))
    after = sandbox.state()
    clean = all(len(after[p][k]) == len(before[p][k]) for p, k in
                (("trello", "cards"), ("gdrive", "files"), ("slack", "messages")))
    order = [c["step_id"] for c in state.compensations(handle.id)]
    run.expected_failures.update({s["action_id"]: "scenario 5's payment, refused on purpose (HTTP 402)"
                                  for s in state.steps(handle.id) if s["status"] == StepStatus.FAILED})
    passed = (status == WorkflowStatus.ROLLED_BACK and clean
              and order == ["notify", "log_row", "create_invoice", "reserve_stock"])
    click.echo((ok if passed else bad)(f"workflow {status}; the sandbox holds nothing the workflow created: {clean}"))
    run.scenarios.append({"scenario": "5", "name": "rollback", "passed": passed, "compensation_order": order})


def scenario_approvals(run: DemoRun) -> None:
    from executors.sandbox.server import SandboxClient
    from workflows import state
    from workflows.client import approve, deny, submit_workflow

    heading(6, "approval gates: one approved, one denied")
    sandbox = SandboxClient(run.sandbox_url)
    results = {}
    for person, decision in (("Sam Doe", ApprovalStatus.APPROVED), ("Alex Roe", ApprovalStatus.DENIED)):
        handle = submit_workflow(_example("approval-gates.yaml"), {"person": person})
        waiting = handle.wait(60).status
        (approval,) = state.approvals(workflow_id=handle.id)
        click.echo(f"  {person}: workflow {waiting}, approval {approval['id']} for step(s) "
                   f"{', '.join(approval['step_ids'])}")
        if decision == ApprovalStatus.APPROVED:
            approve(approval["id"], "demo-manager", "checked with HR")
            final = handle.wait(60).status
        else:
            deny(approval["id"], "announcement not agreed yet", "demo-manager")
            final = handle.wait(60, until=(WorkflowStatus.ROLLED_BACK, WorkflowStatus.ROLLBACK_FAILED)).status
        _track_workflow(run, handle)
        results[person] = final
        mark = ok if final in (WorkflowStatus.SUCCEEDED, WorkflowStatus.ROLLED_BACK) else bad
        click.echo(f"    {decision} -> " + mark(final))
    announced = [r["body"]["text"] for r in sandbox.requests(platform="slack") if "leaving" in str(r["body"])]
    passed = (results == {"Sam Doe": WorkflowStatus.SUCCEEDED, "Alex Roe": WorkflowStatus.ROLLED_BACK}
              and announced == ["Sam Doe is leaving the company"])
    click.echo((ok if passed else bad)("only the approved announcement was sent; the denied one was rolled back"))
    run.scenarios.append({"scenario": "6", "name": "approvals", "passed": passed, "outcomes": results})


def scenario_dashboard(run: DemoRun) -> None:
    from datetime import UTC, datetime

    from workers.cli.reports_cmd import print_metrics
    from workers.guards import breaker
    from workers.guards.base import BreakerState
    from workers.ops.reports import metrics
    from workflows import state

    heading(7, "metrics dashboard: from the store and Redis, as `opsq metrics` shows it")
    data = metrics(datetime.fromtimestamp(run.started_wall, UTC))
    print_metrics(data)
    states = {p: breaker.status(p).state for p in PLATFORM_QUEUES if p != "noop"}
    click.echo("breakers:    " + "  ".join(f"{p}={click.style(s, fg='green' if s == BreakerState.CLOSED else 'red')}"
                                            for p, s in states.items()))
    runs = [r for r in state.list_runs(limit=50) if r["created_at"].timestamp() >= run.started_wall]
    by_status: dict[str, int] = {}
    for r in runs:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    retries = sum(m["retries"] for m in data["platforms"].values())
    click.echo(f"workflows:   {len(runs)} ({', '.join(f'{k}={v}' for k, v in sorted(by_status.items()))}); "
               f"retries {retries}; rollbacks {by_status.get(WorkflowStatus.ROLLED_BACK, 0)}")
    if run.flower_url:
        click.echo(f"Flower:      {run.flower_url} (live workers, tasks and queues)")
    passed = bool(data["platforms"]) and all(s == BreakerState.CLOSED for s in states.values())
    run.scenarios.append({"scenario": "7", "name": "metrics dashboard", "passed": passed,
                          "platforms": data["platforms"], "breakers": states, "workflows": by_status})


SCENARIOS: list[Callable[[DemoRun], None]] = [scenario_routing, scenario_priority, scenario_workflow, scenario_retry,
                                               scenario_breaker, scenario_duplicates, scenario_rollback,
                                               scenario_approvals, scenario_dashboard]


def summarise(run: DemoRun, started: float) -> dict[str, Any]:
    from workers.store import actions as store

    views = [store.get(i) for i in run.action_ids]
    total_time = time.monotonic() - started
    by_platform: dict[str, Counter[str]] = defaultdict(Counter)
    by_priority: dict[str, Counter[str]] = defaultdict(Counter)
    for v in views:
        by_platform[v.platform][v.status] += 1
        by_priority[v.priority][v.status] += 1
    durations = [v.duration_s for v in views if v.duration_s is not None]
    succeeded = sum(1 for v in views if v.status == ActionStatus.SUCCEEDED)
    failed = [v.id for v in views if v.status == ActionStatus.FAILED]
    return {
        "total_actions": len(views),
        "succeeded": succeeded,
        "failed": len(failed),
        "expected_failures": {i: run.expected_failures[i] for i in failed if i in run.expected_failures},
        "unexpected_failures": [i for i in failed if i not in run.expected_failures],
        "success_rate": round(succeeded / len(views), 4) if views else 0.0,
        "by_platform": {k: dict(c) for k, c in sorted(by_platform.items())},
        "by_priority": {k: dict(c) for k, c in sorted(by_priority.items())},
        "retries": sum(max(0, v.attempts - 1) for v in views),
        "average_action_s": round(sum(durations) / len(durations), 4) if durations else None,
        "total_time_s": round(total_time, 3),
        "throughput_per_s": round(len(views) / total_time, 2) if total_time else None,
        "scenarios": run.scenarios,
        "all_scenarios_passed": all(s["passed"] for s in run.scenarios),
    }


def print_summary(summary: dict[str, Any]) -> None:
    click.echo()
    click.echo(click.style("── Summary ", bold=True) + "─" * 40)
    rate = summary["success_rate"] * 100
    colour = "green" if rate >= 90 else "red"
    click.echo(f"actions        {summary['total_actions']}  succeeded {summary['succeeded']}  "
               f"failed {summary['failed']}  success rate {click.style(f'{rate:.1f}%', fg=colour, bold=True)}")
    for why in summary["expected_failures"].values():
        click.echo(ok(f"expected failure: {why}"))
    for action_id in summary["unexpected_failures"]:
        click.echo(bad(f"unexpected failure: action {action_id} (opsq action status {action_id})"))
    click.echo(f"retries        {summary['retries']}")
    click.echo("by platform    " + "  ".join(f"{p}={sum(c.values())}" for p, c in summary["by_platform"].items()))
    click.echo("by priority    " + "  ".join(f"{p}={sum(c.values())}" for p, c in summary["by_priority"].items()))
    avg = summary["average_action_s"]
    click.echo(f"average action {avg * 1000:.1f} ms" if avg is not None else "average action -")
    click.echo(f"total time     {summary['total_time_s']:.2f} s   throughput {summary['throughput_per_s']} actions/s")
    for s in summary["scenarios"]:
        click.echo((ok if s["passed"] else bad)(f"scenario {s['scenario']}: {s['name']}"))


def run_demo(*, quick: bool, json_out: Path | None, use_configured: bool, flower: bool = False) -> bool:
    started = time.monotonic()
    with DemoEnvironment(use_configured, flower) as env:
        run = DemoRun(quick=quick, sandbox_url=env.sandbox.url, worker_name=env.worker_name, workdir=env.tmp,
                      flower_url=env.flower_url)
        for scenario in SCENARIOS:
            scenario(run)
        summary = summarise(run, started)
    print_summary(summary)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2, sort_keys=True))
        click.echo(f"summary written to {json_out}")
    return bool(summary["all_scenarios_passed"])
