"""Operator and flow control (issue 14, items 1-3), on real worker processes, real beats, the sandbox and the
store: cancel (durable, with every worker stopped; a Celery revoke ends the same way; a workflow's completed
steps compensated newest first), scheduled actions (sent when due, once, with two beats and a worker restart),
deadlines (an action past its deadline ends `expired` without a platform call; a workflow past its deadline
is cancelled and rolled back)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.wait import stored, wait_for
from tests.support.worker import start_beat
from workers.celery_app import app
from workers.client import cancel_action, submit_action, wait_all
from workers.ops import stuck
from workers.store import actions as store
from workers.store import audit
from workers.store.models import utcnow
from workflows import state
from workflows.client import cancel_workflow, submit_workflow

pytestmark = pytest.mark.integration
LIST_ID = "5f1e0a9c3b2d4e6f7a8b9c0d"


def calls_for(sandbox_client, platform: str) -> list[dict]:
    return [c for c in sandbox_client.requests() if c["platform"] == platform]


def test_a_cancel_made_with_every_worker_stopped_holds_once_they_start(opsq_env_sqlite, workers_started,
                                                                       sandbox_client):
    env = opsq_env_sqlite()
    doomed = submit_action("trello", "create_card", {"list_id": LIST_ID, "name": "never"})
    kept = submit_action("trello", "create_card", {"list_id": LIST_ID, "name": "runs"})
    done = cancel_action(doomed.id, actor="dana", why="wrong board")
    assert (done.status, done.changed) == ("cancelled", True)
    assert store.get(doomed.id).status == "cancelled"  # in the store before any worker exists
    again = cancel_action(doomed.id)
    assert (again.status, again.changed) == ("cancelled", False)  # idempotent
    workers_started(env, queues="trello")
    assert doomed.wait(30).status == "cancelled"
    assert kept.wait(30).status == "succeeded"
    time.sleep(0.5)  # the cancelled message is consumed after or alongside the kept one
    names = [c["body"]["name"] for c in calls_for(sandbox_client, "trello")]
    assert names == ["runs"]  # the cancelled one never reached the platform
    view = store.get(doomed.id)
    assert view.error == "cancelled by dana: wrong board" and view.attempts == 0
    entries = [e for e in audit.entries(action="action_cancel") if e["target"] == f"action:{doomed.id}"]
    assert len(entries) == 1 and entries[0]["actor"] == "dana"
    # The CLI says the same, in one line, and a finished action is left alone.
    shown = opsq(env, "action", "cancel", kept.id)
    assert shown.returncode == 0 and "already succeeded: nothing to cancel" in shown.stdout, shown.stderr


def test_a_celery_revoke_ends_cancelled_and_detect_stuck_leaves_it(opsq_env_sqlite, workers_started,
                                                                   sandbox_client):
    env = opsq_env_sqlite()
    worker = workers_started(env, queues="notion")
    app.control.cancel_consumer("notion", destination=[worker.name], reply=True, timeout=5)
    handle = submit_action("notion", "create_task", {"database_id": "d", "title": "revoked"})
    app.control.revoke(handle.id)  # what Flower's "revoke" sends: kept in the running workers' memory only
    app.control.add_consumer("notion", destination=[worker.name], reply=True, timeout=5)
    assert handle.wait(30).status == "cancelled"
    assert store.get(handle.id).error.startswith("cancelled by celery-revoke")
    report = stuck.detect(cutoff=utcnow() + timedelta(seconds=1))
    assert handle.id not in report.requeued and handle.id not in report.failed
    assert store.get(handle.id).status == "cancelled"
    assert calls_for(sandbox_client, "notion") == []


def approval_chain() -> dict:
    return {"name": "gated", "steps": [
        {"id": "file", "platform": "gdrive", "action": "create_file", "params": {"name": "c.pdf"}},
        {"id": "row", "platform": "gsheets", "action": "append_row",
         "params": {"sheet": "orders", "values": ["{{ steps.file.output.file_id }}"]}, "depends_on": ["file"]},
        {"id": "msg", "platform": "slack", "action": "send_message", "params": {"channel": "#o", "text": "go"},
         "depends_on": ["row"], "requires_approval": True},
    ]}


def test_a_cancelled_workflow_compensates_its_completed_steps_newest_first(opsq_env_sqlite, workers_started,
                                                                           sandbox_client):
    env = opsq_env_sqlite()
    workers_started(env)
    handle = submit_workflow(approval_chain())
    assert handle.wait(60).status == "awaiting_approval"
    shown = opsq(env, "workflow", "cancel", handle.id, "--why", "order withdrawn")
    assert shown.returncode == 0 and "cancelling" in shown.stdout, shown.stderr
    assert handle.wait(60, until=("cancelled", "rollback_failed")).status == "cancelled"
    comps = state.compensations(handle.id)
    assert [(c["position"], c["step_id"], c["status"]) for c in comps] == [(1, "row", "done"), (2, "file", "done")]
    calls = sandbox_client.requests()
    appended = next(i for i, c in enumerate(calls) if c["platform"] == "gsheets")  # step `row`, the last done
    undo = [c["platform"] for c in calls[appended + 1:] if not (c["platform"] == "gsheets" and c["method"] == "GET")]
    assert undo == ["gsheets", "gdrive"] and not [c for c in calls if c["platform"] == "slack"]
    steps = {s["step_id"]: s["status"] for s in state.steps(handle.id)}
    assert steps == {"file": "succeeded", "row": "succeeded", "msg": "skipped"}
    assert [a["status"] for a in state.approvals(status=None, workflow_id=handle.id)] == ["denied"]
    assert cancel_workflow(handle.id) == "already cancelled: nothing to cancel"
    assert [e for e in audit.entries(action="workflow_cancel") if e["target"] == f"workflow:{handle.id}"]


def test_a_workflow_cancelled_without_rollback_keeps_what_completed(opsq_env_sqlite, workers_started):
    env = opsq_env_sqlite()
    workers_started(env)
    handle = submit_workflow(approval_chain())
    assert handle.wait(60).status == "awaiting_approval"
    assert cancel_workflow(handle.id, rollback=False).startswith("cancelled")
    assert handle.status() == "cancelled" and state.compensations(handle.id) == []


@pytest.fixture
def beats(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for b in started:
        b.terminate()
    for b in started:
        try:
            b.wait(15)
        except subprocess.TimeoutExpired:
            b.kill()


def test_scheduled_actions_run_once_each_not_before_their_time(opsq_env_sqlite, workers_started, sandbox_client,
                                                               beats, tmp_path):
    env = opsq_env_sqlite()
    worker = workers_started(env, queues="slack,control")
    beats.extend(start_beat(env, tmp_path / f"beat{i}.log") for i in range(2))  # one leads, one stands by
    handles = [submit_action("slack", "send_message", {"channel": "#later", "text": f"m{i}"}, countdown=3 + i / 2)
               for i in range(20)]  # due 3 to 12.5 s from now
    cancelled = submit_action("slack", "send_message", {"channel": "#later", "text": "never"}, countdown=4)
    # The same for workflows: `pending` until due, then started by the beat leader; one cancelled before.
    one_step = {"name": "later", "steps": [{"id": "say", "platform": "slack", "action": "send_message",
                                            "params": {"channel": "#later", "text": "{{ input.word }}"}}]}
    flow = submit_workflow(one_step, {"word": "flow"}, countdown=5)
    dropped = submit_workflow(one_step, {"word": "dropped"}, countdown=5)
    assert flow.status() == "pending" and state.get_run_row(flow.id)["scheduled_for"] is not None
    assert cancel_workflow(dropped.id).startswith("cancelled")
    listed = {a["id"]: a for a in json.loads(opsq(env, "action", "list", "--scheduled", "--limit", "100",
                                                   "--json").stdout)}
    # Every one not sent yet is listed, with when it is due (the first may be sent while the CLI starts).
    assert all(listed[h.id]["scheduled_for"] for h in handles[10:])  # due 8 s and more from the submit
    assert all(h.id in listed or store.get(h.id).status != "scheduled" for h in handles)
    assert cancel_action(cancelled.id).status == "cancelled"
    time.sleep(4.5)
    worker.stop()  # a worker restart while actions are still due
    workers_started(env, queues="slack")
    wait_all(handles, timeout=60)
    stored([h.id for h in handles])  # the store has every outcome (written behind Redis')
    for h in handles:
        view = store.get(h.id)
        assert view.status == "succeeded" and view.attempts == 1, view
        # Not before its time: the sandbox took the call after the action was due (Redis' and this host's clocks
        # are the same machine's; 0.05 s for rounding in the stored times).
        call = next(c for c in calls_for(sandbox_client, "slack") if c["body"]["text"] == view.params["text"])
        assert call["started"] >= view.scheduled_for.timestamp() - 0.05, (call["started"], view.scheduled_for)
        # ...and soon after: the beat leader looks every second (the tolerance, with room for this machine's load).
        assert call["started"] - view.scheduled_for.timestamp() < 5.0
    assert flow.wait(60).status == "succeeded"
    due = state.get_run_row(flow.id)["scheduled_for"].timestamp()
    (call,) = [c for c in calls_for(sandbox_client, "slack") if c["body"]["text"] == "flow"]
    assert call["started"] >= due - 0.05, (call["started"], due)
    texts = [c["body"]["text"] for c in calls_for(sandbox_client, "slack")]
    assert sorted(texts) == sorted([*(f"m{i}" for i in range(20)), "flow"])  # each once; the cancelled ones never
    assert store.get(cancelled.id).status == "cancelled" and dropped.status() == "cancelled"


def test_an_action_past_its_deadline_ends_expired_without_a_call(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    late = submit_action("gdrive", "create_file", {"name": "late.txt"}, expires_in=1)
    on_time = submit_action("gdrive", "create_file", {"name": "on-time.txt"}, expires_in=120)
    assert store.get(late.id).expires_at is not None
    time.sleep(1.5)  # no worker yet: the first one misses its deadline in the queue
    workers_started(env, queues="gdrive")
    assert late.wait(30).status == "expired"
    assert on_time.wait(30).status == "succeeded"
    assert [c["body"]["name"] for c in calls_for(sandbox_client, "gdrive")] == ["on-time.txt"]
    assert store.dead_letters() == []  # expired is not a failure to replay


def test_a_workflow_past_its_deadline_is_cancelled_and_rolled_back(opsq_env_sqlite, workers_started):
    env = opsq_env_sqlite()
    workers_started(env)
    handle = submit_workflow(approval_chain(), expires_in=2)
    assert handle.wait(60).status == "awaiting_approval"
    time.sleep(max(0.0, (state.get_run_row(handle.id)["expires_at"] - utcnow()).total_seconds()) + 0.2)
    ran = opsq(env, "maintenance", "run", "expire_approvals")
    assert ran.returncode == 0 and handle.id in ran.stdout, ran.stdout + ran.stderr
    assert handle.wait(60, until=("cancelled", "rollback_failed")).status == "cancelled"
    assert [c["step_id"] for c in state.compensations(handle.id)] == ["row", "file"]
    wait_for(lambda: all(c["status"] == "done" for c in state.compensations(handle.id)), 30, "compensations done")


def test_a_hung_call_is_stopped_at_its_time_limit_and_its_effect_found_not_made_twice(opsq_env_sqlite,
                                                                                      workers_started,
                                                                                      sandbox_client):
    # The lease (and so each call's time limit) at 2 s; the sandbox holds the first call 4 s, then makes the card.
    # The call is stopped at 2 s (an ambiguous failure); the retry, 3 s later, looks the card up by its effect key
    # and finds it: one card, the action succeeded, reconciled, the pool process alive.
    env = opsq_env_sqlite(OPSQ_IDEMPOTENCY_LEASE_S="2", OPSQ_AMBIGUOUS_SETTLE_S="3", OPSQ_RETRY_BASE_S="0.1")
    sandbox_client.fault("trello", "ok", latency_ms=4000, times=1)
    worker = workers_started(env, queues="trello")
    handle = submit_action("trello", "create_card", {"list_id": LIST_ID, "name": "slow"}, max_attempts=3)
    view = handle.wait(60)
    assert view.status == "succeeded", view
    (done,) = stored([handle.id])
    assert done.attempts == 2 and done.reconciled, done
    creates = [c for c in calls_for(sandbox_client, "trello") if c["method"] == "POST"]
    assert len(creates) == 1
    assert "the call ran past its time limit (2s) and was stopped" in worker.log(), worker.log()
    assert worker.proc.poll() is None


def test_a_cancel_never_claims_an_action_an_attempt_already_holds(opsq_env_sqlite, redis_client):
    """The mark goes first, then the execution record is read (Redis runs one command at a time): an attempt that
    was admitted before the mark is seen, and the cancel does not record `cancelled` over it."""
    opsq_env_sqlite()
    running = submit_action("trello", "create_card", {"list_id": LIST_ID, "name": "in flight"})
    settled = submit_action("trello", "create_card", {"list_id": LIST_ID, "name": "done, written behind"})
    lease = time.time() + 60
    redis_client.hset(f"opsq:run:{running.id}", mapping={"state": "running", "owner": "w:1:x",
                                                         "lease_until": f"{lease:.6f}", "attempt": "1"})
    redis_client.hset(f"opsq:run:{settled.id}", mapping={"state": "done", "result": "{}"})

    busy = cancel_action(running.id, why="too late?")
    assert (busy.status, busy.changed) == ("running", True)
    assert store.get(running.id).status == "queued"  # not claimed as cancelled: its call may succeed
    assert redis_client.exists(f"opsq:cancel:{running.id}")  # ...but no retry will start
    late = cancel_action(settled.id)
    assert (late.status, late.changed) == ("succeeded", False) and store.get(settled.id).status == "queued"
