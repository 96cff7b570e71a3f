"""Workflows end to end on real workers: chains and chords, templates, reverse-order rollback through
link_error, approval gates, and worker crashes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.wait import wait_for
from workers.ops.queue_ops import priority_lists
from workers.store.db import session
from workflows import state
from workflows.client import WorkflowHandle, approve, submit_workflow
from workflows.models import WorkflowRun
from workflows.spec import WorkflowInvalid
from workflows.tasks import workflow_pause

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
LIST_ID = "5f1e0a9c3b2d4e6f7a8b9c0d"


def opsq(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def platforms_in_order(calls: list[dict]) -> list[str]:
    return [c["platform"] for c in calls]


def test_four_step_chain_runs_in_order_with_templates(opsq_env, workers_started, sandbox_client):
    workers_started(opsq_env())
    handle = submit_workflow(EXAMPLES / "invoice.yaml", {"order_id": "B-7"})
    assert handle.wait(60).status == "succeeded"
    calls = sandbox_client.requests()
    assert platforms_in_order(calls) == ["gdrive", "gsheets", "slack", "notion"]
    file_id = calls[0]["response"]["id"]
    assert calls[0]["body"]["name"] == "invoice-B-7.pdf"
    assert calls[1]["body"]["values"] == [["B-7", 125.5, file_id]]
    assert calls[2]["body"]["text"] == "Invoice B-7 logged in row 1"
    steps = {s["step_id"]: s for s in state.steps(handle.id)}
    assert [steps[s]["completed_seq"] for s in ("create_invoice", "log_row", "notify", "follow_up")] == [1, 2, 3, 4]
    assert steps["log_row"]["params"]["values"][2] == file_id  # the rendered params are recorded


DIAMOND = {
    "name": "diamond",
    "steps": [
        {"id": "scan", "platform": "gdrive", "action": "create_file", "params": {"name": "scan.txt"}},
        {"id": "compliance", "platform": "trello", "action": "create_card",
         "params": {"list_id": LIST_ID, "name": "compliance {{ steps.scan.output.file_id }}"}, "depends_on": ["scan"]},
        {"id": "review", "platform": "notion", "action": "create_task",
         "params": {"database_id": "reviews", "title": "review {{ steps.scan.output.file_id }}"},
         "depends_on": ["scan"]},
        {"id": "notify", "platform": "slack", "action": "send_message",
         "params": {"channel": "#ops", "text": "card {{ steps.compliance.output.card_id }}, "
                                               "page {{ steps.review.output.page_id }}"},
         "depends_on": ["compliance", "review"]},
    ],
}


def test_diamond_runs_its_middle_steps_in_parallel(opsq_env_sqlite, workers_started, sandbox_client):
    workers_started(opsq_env_sqlite(), concurrency=2)
    sandbox_client.fault("trello", "ok", latency_ms=700)
    sandbox_client.fault("notion", "ok", latency_ms=700)
    handle = submit_workflow(DIAMOND)
    assert handle.wait(60).status == "succeeded"
    by = {c["platform"]: c for c in sandbox_client.requests()}
    comp, review, notify = by["trello"], by["notion"], by["slack"]
    assert comp["started"] < review["finished"] and review["started"] < comp["finished"]  # they overlapped
    assert notify["started"] >= max(comp["finished"], review["finished"])
    assert comp["response"]["id"] in notify["body"]["text"] and review["response"]["id"] in notify["body"]["text"]


def chain_spec(fail_last: bool = True) -> dict:
    return {"name": "four", "input": {"order": "o-1"}, "steps": [
        {"id": "file", "platform": "gdrive", "action": "create_file", "params": {"name": "{{ input.order }}.pdf"}},
        {"id": "row", "platform": "gsheets", "action": "append_row",
         "params": {"sheet": "orders", "values": ["{{ steps.file.output.file_id }}"]}, "depends_on": ["file"]},
        {"id": "msg", "platform": "slack", "action": "send_message",
         "params": {"channel": "#orders", "text": "order {{ input.order }}"}, "depends_on": ["row"]},
        {"id": "card", "platform": "trello", "action": "create_card",
         "params": {"list_id": LIST_ID, "name": "charge {{ input.order }}"}, "depends_on": ["msg"]},
    ]}


def test_failure_at_step_four_compensates_three_two_one_in_order(opsq_env, workers_started, sandbox_client):
    workers_started(opsq_env())
    sandbox_client.fault("trello", "error", status=400)  # the payment step fails for good
    handle = submit_workflow(chain_spec())
    assert handle.wait(60, until=("rolled_back", "rollback_failed")).status == "rolled_back"
    calls = sandbox_client.requests()
    failed_at = next(i for i, c in enumerate(calls) if c["platform"] == "trello")
    undo = [(c["platform"], c["method"]) for c in calls[failed_at + 1:]]
    # msg (slack) first, then row (gsheets: read the row, find the sheet, delete it), then file (gdrive)
    assert [p for p, _ in undo if not (p == "gsheets" and _ == "GET")] == ["slack", "gsheets", "gdrive"]
    assert undo[0] == ("slack", "POST") and calls[failed_at + 1]["path"].endswith("chat.delete")
    assert undo[-1] == ("gdrive", "DELETE")
    sandbox_state = sandbox_client.state()
    assert sandbox_state["slack"]["messages"] == []
    assert sandbox_state["gdrive"]["files"] == []
    sheets = sandbox_state["gsheets"]["spreadsheets"]
    assert all(not any(tab.get("rows") for tab in sheet["sheets"].values()) for sheet in sheets.values()), sheets
    comps = state.compensations(handle.id)
    assert [(c["position"], c["step_id"], c["status"]) for c in comps] == [
        (1, "msg", "done"), (2, "row", "done"), (3, "file", "done")]
    run = state.get_run_row(handle.id)
    assert run["failed_step"] == "card"


PARALLEL_FAIL = {
    "name": "branches",
    "steps": [
        {"id": "start", "platform": "gdrive", "action": "create_file", "params": {"name": "start.txt"}},
        {"id": "fast", "platform": "slack", "action": "send_message", "params": {"channel": "#a", "text": "fast"},
         "depends_on": ["start"]},
        {"id": "slow", "platform": "trello", "action": "create_card", "params": {"list_id": LIST_ID, "name": "slow"},
         "depends_on": ["start"]},
        {"id": "end", "platform": "notion", "action": "create_task", "params": {"database_id": "d", "title": "end"},
         "depends_on": ["fast", "slow"]},
    ],
}


def test_branch_failure_after_the_other_branch_completed(opsq_env, workers_started, sandbox_client):
    workers_started(opsq_env(), concurrency=2)
    sandbox_client.fault("trello", "error", status=422, latency_ms=800)  # fails after `fast` is done
    handle = submit_workflow(PARALLEL_FAIL)
    assert handle.wait(60, until=("rolled_back", "rollback_failed")).status == "rolled_back"
    comps = state.compensations(handle.id)
    assert [(c["step_id"], c["status"]) for c in comps] == [("fast", "done"), ("start", "done")]
    steps = {s["step_id"]: s["status"] for s in state.steps(handle.id)}
    assert steps == {"start": "succeeded", "fast": "succeeded", "slow": "failed", "end": "skipped"}
    timeline = [e["kind"] for e in state.events(handle.id)]
    assert timeline.count("rollback_started") == 1  # however many errbacks the chord fired
    undo_calls = [c for c in sandbox_client.requests() if c["method"] == "DELETE" or c["path"].endswith("delete")]
    assert [c["platform"] for c in undo_calls] == ["slack", "gdrive"]
    assert sandbox_client.requests(platform="notion") == []


def test_failed_compensation_then_manual_rollback_finishes(opsq_env, workers_started, sandbox_client):
    env = opsq_env(OPSQ_MAX_ATTEMPTS="2")
    workers_started(env)
    sandbox_client.fault("trello", "error", status=400, latency_ms=1500)
    spec = {"name": "stuck", "steps": [
        {"id": "file", "platform": "gdrive", "action": "create_file", "params": {"name": "keep.txt"}},
        {"id": "card", "platform": "trello", "action": "create_card", "params": {"list_id": LIST_ID, "name": "x"},
         "depends_on": ["file"]},
    ]}
    handle = submit_workflow(spec)
    wait_for(lambda: any(s["status"] == "succeeded" for s in state.steps(handle.id)), 20, "the file step")
    sandbox_client.fault("gdrive", "error", status=503)  # the sandbox now refuses the delete
    assert handle.wait(60, until=("rolled_back", "rollback_failed")).status == "rollback_failed"
    (comp,) = state.compensations(handle.id)
    assert comp["status"] == "failed" and "503" in comp["error"]
    assert len(sandbox_client.state(platform="gdrive")["files"]) == 1
    status = opsq(env, "workflow", "status", handle.id)
    assert "rollback_failed" in status.stdout and "failed" in status.stdout
    sandbox_client.clear_faults("gdrive")
    out = opsq(env, "workflow", "rollback", handle.id)
    assert out.returncode == 0 and "retrying" in out.stdout, out.stderr
    assert handle.wait(60, until=("rolled_back",)).status == "rolled_back"
    assert sandbox_client.state(platform="gdrive")["files"] == []
    kinds = [e["kind"] for e in state.events(handle.id)]
    assert "rollback_failed" in kinds and "rollback_retried" in kinds and kinds[-1] == "rolled_back"


def test_worker_killed_mid_workflow_finishes_with_no_step_run_twice(opsq_env_sqlite, workers_started,
                                                                    sandbox_client):
    env = opsq_env_sqlite(OPSQ_VISIBILITY_TIMEOUT_S="3", OPSQ_IDEMPOTENCY_LEASE_S="4")
    doomed = workers_started({**env, "OPSQ_TEST_PAUSE_AFTER_TASK_S": "120"}, concurrency=1,
                             app="tests.support.fault_app")
    handle = submit_workflow(chain_spec())
    wait_for(lambda: any(s["status"] == "succeeded" for s in state.steps(handle.id)), 20, "the first step")
    doomed.kill()  # step 1 done, its message never acknowledged; step 2 already queued
    workers_started(env)
    assert handle.wait(60).status == "succeeded"
    counts = {}
    for call in sandbox_client.requests():
        counts[call["platform"]] = counts.get(call["platform"], 0) + 1
    assert counts == {"gdrive": 1, "gsheets": 1, "slack": 1, "trello": 1}


GATED = {
    "name": "gated",
    "approval_expires_s": 3600,
    "steps": [
        {"id": "draft", "platform": "gdrive", "action": "create_file", "params": {"name": "contract.pdf"}},
        {"id": "send", "platform": "slack", "action": "send_message", "params": {"channel": "#legal", "text": "sent"},
         "depends_on": ["draft"], "requires_approval": True},
    ],
}


def test_a_redelivered_pause_does_not_hold_an_approved_workflow(opsq_env, workers_started, sandbox_client):
    """A worker stopped (SIGTERM to its whole process group, as systemd does) right after the pause committed
    and before its ack leaves the pause message to be delivered again, after the approval: it must neither
    ask again nor hold the approved workflow."""
    workers_started(opsq_env())
    handle = submit_workflow(GATED)
    assert handle.wait(60).status == "awaiting_approval"
    (pending,) = state.approvals(workflow_id=handle.id)
    assert workflow_pause.run(handle.id, pending["level"]) is None  # delivered again while it waits: nothing to do
    assert handle.status() == "awaiting_approval" and len(state.approvals(status=None, workflow_id=handle.id)) == 1
    approve(pending["id"], actor="dana")
    assert workflow_pause.run(handle.id, pending["level"]) == pending["id"]  # ... and after the approval
    assert handle.wait(60).status == "succeeded"
    assert len(state.approvals(status=None, workflow_id=handle.id)) == 1
    assert platforms_in_order(sandbox_client.requests()) == ["gdrive", "slack"]


def test_approval_after_restarting_every_worker_resumes(opsq_env, workers_started, sandbox_client):
    env = opsq_env()
    first = workers_started(env)
    handle = submit_workflow(GATED)
    assert handle.wait(60).status == "awaiting_approval"
    (pending,) = state.approvals(workflow_id=handle.id)
    assert pending["step_ids"] == ["send"] and pending["status"] == "pending"
    first.stop()
    listed = opsq(env, "approvals", "list")
    assert pending["id"] in listed.stdout
    out = opsq(env, "approvals", "approve", pending["id"], "--comment", "looks right", "--actor", "dana")
    assert out.returncode == 0, out.stderr
    workers_started(env)  # a different worker, started after the approval
    assert handle.wait(60).status == "succeeded"
    assert platforms_in_order(sandbox_client.requests()) == ["gdrive", "slack"]
    assert state.approvals(status=None, workflow_id=handle.id)[0]["decided_by"] == "dana"
    again = opsq(env, "approvals", "approve", pending["id"], "--actor", "lee")
    assert again.returncode != 0 and "already approved" in again.stderr


def test_denied_approval_rolls_back(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    workers_started(env)
    handle = submit_workflow(GATED)
    assert handle.wait(60).status == "awaiting_approval"
    (pending,) = state.approvals(workflow_id=handle.id)
    out = opsq(env, "approvals", "deny", pending["id"], "--reason", "wrong customer")
    assert out.returncode == 0, out.stderr
    assert handle.wait(60, until=("rolled_back", "rollback_failed")).status == "rolled_back"
    assert sandbox_client.state(platform="gdrive")["files"] == []
    assert sandbox_client.requests(platform="slack") == []
    assert "wrong customer" in (state.get_run_row(handle.id)["error"] or "")


def test_expired_approval_rolls_back(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    workers_started(env)
    handle = submit_workflow({**GATED, "approval_expires_s": 1})
    assert handle.wait(60).status == "awaiting_approval"
    wait_for(lambda: state.due_approvals(state.utcnow()), 5, "the approval to be due")
    out = opsq(env, "approvals", "expire")
    assert out.returncode == 0 and "expired 1" in out.stdout
    assert handle.wait(60, until=("rolled_back", "rollback_failed")).status == "rolled_back"
    assert sandbox_client.state(platform="gdrive")["files"] == []
    (approval,) = state.approvals(status=None, workflow_id=handle.id)
    assert approval["status"] == "expired"
    late = opsq(env, "approvals", "approve", approval["id"], "--actor", "dana")
    assert late.returncode != 0 and "already expired" in late.stderr


INVALID = [
    ("cycle", {"name": "x", "steps": [
        {"id": "a", "platform": "slack", "action": "send_message", "params": {"channel": "c", "text": "t"},
         "depends_on": ["b"]},
        {"id": "b", "platform": "slack", "action": "send_message", "params": {"channel": "c", "text": "t"},
         "depends_on": ["a"]}]}, "dependency cycle"),
    ("unknown depends_on", {"name": "x", "steps": [
        {"id": "a", "platform": "slack", "action": "send_message", "params": {"channel": "c", "text": "t"},
         "depends_on": ["ghost"]}]}, "step a: depends_on names unknown step 'ghost'"),
    ("unknown platform", {"name": "x", "steps": [{"id": "a", "platform": "jira", "action": "x"}]},
     "step a: unknown platform 'jira'"),
    ("unknown action", {"name": "x", "steps": [{"id": "a", "platform": "slack", "action": "fax"}]},
     "step a: unknown action slack.fax"),
    ("bad params", {"name": "x", "steps": [{"id": "a", "platform": "slack", "action": "send_message",
                                            "params": {"channel": "c"}}]}, "step a: text: Field required"),
    ("template not upstream", {"name": "x", "steps": [
        {"id": "a", "platform": "slack", "action": "send_message", "params": {"channel": "c", "text": "t"}},
        {"id": "b", "platform": "slack", "action": "send_message",
         "params": {"channel": "c", "text": "{{ steps.c.output.ts }}"}, "depends_on": ["a"]},
        {"id": "c", "platform": "slack", "action": "send_message", "params": {"channel": "c", "text": "t"}}]},
     "step b: template {{ steps.c.output.ts }} names step 'c', which is not upstream"),
    ("template as code", {"name": "x", "steps": [{"id": "a", "platform": "slack", "action": "send_message",
                                                  "params": {"channel": "c", "text": "{{ __import__('os') }}"}}]},
     "is not a plain path"),
    ("secret in params", {"name": "x", "steps": [{"id": "a", "platform": "webhook", "action": "post",
                                                  "params": {"url": "http://h/x",
                                                             "headers": {"Authorization": "Bearer s3cret"}}}]},
     "step a: params.headers.Authorization looks like a secret"),
    ("secret in input", {"name": "x", "input": {"api_token": "tok-1"}, "steps": [
        {"id": "a", "platform": "slack", "action": "send_message", "params": {"channel": "c", "text": "t"}}]},
     "input.api_token looks like a secret"),
]


@pytest.mark.parametrize(("label", "spec", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_specs_are_refused_and_nothing_is_enqueued(opsq_env_sqlite, redis_client, label, spec, message):
    before = sorted(k for k in redis_client.keys("*") if redis_client.type(k) == b"list")
    with pytest.raises(WorkflowInvalid) as info:
        submit_workflow(spec)
    assert message in str(info.value)
    assert sorted(k for k in redis_client.keys("*") if redis_client.type(k) == b"list") == before == []
    with session() as s:
        assert s.scalar(select(func.count()).select_from(WorkflowRun)) == 0


def test_every_problem_is_reported_at_once(opsq_env_sqlite):
    spec = {"name": "x", "steps": [
        {"id": "a", "platform": "jira", "action": "x"},
        {"id": "b", "platform": "slack", "action": "send_message", "params": {"channel": "c"}, "depends_on": ["zz"]},
    ]}
    with pytest.raises(WorkflowInvalid) as info:
        submit_workflow(spec)
    assert len(info.value.errors) == 3
    assert any("step a" in e for e in info.value.errors) and sum("step b" in e for e in info.value.errors) == 2


def test_cli_workflow_run_wait_and_state(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    workers_started(env)
    out = opsq(env, "workflow", "run", str(EXAMPLES / "invoice.yaml"), "--input", "order_id=C-3", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    wid = out.stdout.split()[1]
    assert WorkflowHandle(wid).status() == "succeeded"
    st = opsq(env, "workflow", "state", wid)
    assert "step_succeeded" in st.stdout and "invoice-C-3.pdf" in st.stdout
    listed = opsq(env, "workflow", "list", "--json")
    assert wid in listed.stdout
    bad = opsq(env, "workflow", "validate", "/nonexistent.yaml")
    assert bad.returncode != 0 and "no such workflow file" in bad.stderr and "Traceback" not in bad.stderr


def test_the_submitter_may_deny_but_not_approve_unless_the_gate_allows_it(opsq_env_sqlite, workers_started,
                                                                        sandbox_client):
    """Issue 15: every gate, with or without an `approval:` policy, refuses its submitter's approval (one line,
    nothing changes); the submitter may deny; another person approves; `allow_self_approval: true` allows it."""
    env = opsq_env_sqlite()
    workers_started(env)
    handle = submit_workflow(GATED, created_by="dana")
    assert handle.wait(60).status == "awaiting_approval"
    (pending,) = state.approvals(workflow_id=handle.id)
    own = opsq(env, "approvals", "approve", pending["id"], "--actor", "dana")
    assert own.returncode == 1 and "Traceback" not in own.stderr
    assert own.stderr.strip() == (f"error: dana submitted workflow {handle.id} and may not approve it "
                                  "(allow_self_approval: false); another person must approve it (a spec's gate may "
                                  "allow it: approval: {allow_self_approval: true})")
    assert state.approvals(workflow_id=handle.id)[0]["status"] == "pending" and handle.status() == "awaiting_approval"
    other = opsq(env, "approvals", "approve", pending["id"], "--actor", "reviewer")
    assert other.returncode == 0, other.stderr
    assert handle.wait(60).status == "succeeded"
    assert state.approvals(status=None, workflow_id=handle.id)[0]["decided_by"] == "reviewer"

    denied = submit_workflow(GATED, created_by="dana")
    assert denied.wait(60).status == "awaiting_approval"
    no = opsq(env, "approvals", "deny", state.approvals(workflow_id=denied.id)[0]["id"], "--reason", "not now",
              "--actor", "dana")
    assert no.returncode == 0, no.stderr
    assert denied.wait(60, until=("rolled_back", "rollback_failed")).status == "rolled_back"

    steps = [dict(s) for s in GATED["steps"]]
    steps[-1]["approval"] = {"allow_self_approval": True}
    mine = submit_workflow({**GATED, "steps": steps}, created_by="dana")
    assert mine.wait(60).status == "awaiting_approval"
    yes = opsq(env, "approvals", "approve", state.approvals(workflow_id=mine.id)[0]["id"], "--actor", "dana")
    assert yes.returncode == 0, yes.stderr
    assert mine.wait(60).status == "succeeded"


def test_approve_resumes_in_process(opsq_env_sqlite, workers_started, sandbox_client):
    workers_started(opsq_env_sqlite())
    handle = submit_workflow(GATED)
    assert handle.wait(60).status == "awaiting_approval"
    approve(state.approvals(workflow_id=handle.id)[0]["id"], "tester")
    assert handle.wait(60).status == "succeeded"


def test_a_workflow_whose_messages_were_lost_resumes_without_redoing_steps(opsq_env_sqlite, workers_started,
                                                                          sandbox_client, redis_client):
    env = opsq_env_sqlite()
    worker = workers_started(env, queues="gdrive,gsheets,trello,control")  # step 3 (slack) waits in Redis
    handle = submit_workflow(chain_spec())
    wait_for(lambda: any(s["step_id"] == "row" and s["status"] == "succeeded" for s in state.steps(handle.id)),
             30, "two steps done")
    wait_for(lambda: redis_client.llen("slack") + redis_client.llen("slack\x06\x166") > 0, 10, "step 3 queued")
    worker.kill()
    for queue in ("slack", "trello", "gsheets", "gdrive", "control"):  # the broker loses every message
        for key in priority_lists(queue).values():
            redis_client.delete(key)
    redis_client.delete("unacked", "unacked_index")
    out = opsq(env, "workflow", "resume", handle.id)
    assert out.returncode == 0 and "resumed from level" in out.stdout, out.stdout + out.stderr
    workers_started(env)
    assert handle.wait(60).status == "succeeded"
    counts: dict[str, int] = {}
    for call in sandbox_client.requests():
        counts[call["platform"]] = counts.get(call["platform"], 0) + 1
    assert counts == {"gdrive": 1, "gsheets": 1, "slack": 1, "trello": 1}
    assert "resumed" in [e["kind"] for e in state.events(handle.id)]
