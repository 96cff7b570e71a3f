"""A workflow with `on_failure: stop` ends `failed` with what completed kept; `opsq workflow retry
--from-failed-step` runs it again from the failed step on real workers, the completed steps not run again and
their outputs read by the steps after them."""

from __future__ import annotations

import pytest

from tests.integration.opsq_cli import opsq
from workers.errors import EnqueueError
from workers.store import actions as store
from workers.store import audit
from workflows import client, state
from workflows.client import WorkflowHandle, submit_workflow
from workflows.tasks import step_failed_for_good

pytestmark = pytest.mark.integration

LIST_ID = "5f1e0a9c3b2d4e6f7a8b9c0d"
STOP = {
    "name": "stop-and-retry",
    "on_failure": "stop",
    "steps": [
        {"id": "file", "platform": "gdrive", "action": "create_file", "params": {"name": "retry.txt"}},
        {"id": "card", "platform": "trello", "action": "create_card",
         "params": {"list_id": LIST_ID, "name": "card for {{ steps.file.output.file_id }}"}, "depends_on": ["file"]},
        {"id": "note", "platform": "slack", "action": "send_message",
         "params": {"channel": "#ops", "text": "card {{ steps.card.output.card_id }}"}, "depends_on": ["card"]},
    ],
}


def _calls(sandbox_client, platform: str) -> list[dict]:
    return [r for r in sandbox_client.requests(platform=platform) if r["method"] in ("POST", "PUT")]


def test_a_stopped_workflow_is_retried_from_its_failed_step(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    workers_started(env)
    sandbox_client.fault("trello", "auth")  # refused: the card step fails for good at once
    handle = submit_workflow(STOP)
    assert handle.wait(60).status == "failed"
    run = state.get_run_row(handle.id)
    assert run["failed_step"] == "card" and "auth" in run["error"]
    steps = {s["step_id"]: s for s in state.steps(handle.id)}
    assert {k: s["status"] for k, s in steps.items()} == {"file": "succeeded", "card": "failed", "note": "skipped"}
    assert state.compensations(handle.id) == []  # nothing was undone
    file_id = steps["file"]["output"]["file_id"]
    old_card_action = steps["card"]["action_id"]

    refused = opsq(env, "workflow", "retry", handle.id)
    assert refused.returncode == 2 and "--from-failed-step" in refused.stderr
    dry = opsq(env, "workflow", "retry", "--from-failed-step", handle.id, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "runs again from level 1: card, note" in dry.stdout and "reused): file" in dry.stdout
    assert state.get_run_row(handle.id)["status"] == "failed"  # the dry run changed nothing

    sandbox_client.clear_faults()
    sandbox_client.clear_requests()
    out = opsq(env, "workflow", "retry", "--from-failed-step", handle.id, "--actor", "dana")
    assert out.returncode == 0, out.stderr
    assert "retrying from level 1: sent card" in out.stdout and "kept file" in out.stdout
    assert WorkflowHandle(handle.id).wait(60).status == "succeeded"
    # The completed step did not run again; the retried ones ran once each, reading its output.
    assert _calls(sandbox_client, "gdrive") == []
    (card_call,) = _calls(sandbox_client, "trello")
    assert card_call["body"]["name"] == f"card for {file_id}" and card_call["status"] == 200
    (note_call,) = _calls(sandbox_client, "slack")
    steps = {s["step_id"]: s for s in state.steps(handle.id)}
    assert note_call["body"]["text"] == f"card {steps['card']['output']['card_id']}"
    assert steps["file"]["output"]["file_id"] == file_id and steps["file"]["completed_seq"] == 1
    # The card ran as a new action; the failed one's record stays as it ended.
    assert steps["card"]["action_id"] != old_card_action
    assert store.get(old_card_action).status == "failed"
    assert store.get(steps["card"]["action_id"]).status == "succeeded"
    kinds = [e["kind"] for e in state.events(handle.id)]
    assert kinds.index("failed") < kinds.index("retried") < kinds.index("succeeded")
    (entry,) = audit.entries(action="workflow_retry")
    assert entry["actor"] == "dana" and entry["detail"]["rerun"] == ["card", "note"]

    again = opsq(env, "workflow", "retry", "--from-failed-step", handle.id)
    assert again.returncode == 1 and "only a failed workflow is retried" in again.stderr


def test_a_retry_the_broker_refuses_is_withdrawn_and_can_be_made_again(opsq_env_sqlite, redis_client, monkeypatch):
    handle = submit_workflow(STOP)  # no worker: its first message waits in Redis
    redis_client.flushdb()  # lost, so nothing of it is in flight
    state.step_failed(handle.id, "file", "[auth] refused")
    assert step_failed_for_good(handle.id, "step file failed: [auth] refused", failed_step="file")
    assert state.get_run_row(handle.id)["status"] == "failed"
    old = {s["step_id"]: s["action_id"] for s in state.steps(handle.id)}

    def refused(*args, **kwargs):
        raise EnqueueError("could not enqueue: Redis refused the connection")

    monkeypatch.setattr(client, "launch", refused)
    with pytest.raises(EnqueueError):
        client.retry(handle.id, "dana")
    run = state.get_run_row(handle.id)
    assert run["status"] == "failed" and run["failed_step"] == "file" and "retry not sent" in run["error"]
    assert [e["action"] for e in audit.entries() if e["action"].startswith("workflow_retry")] == [
        "workflow_retry", "workflow_retry_withdrawn"]
    monkeypatch.undo()
    assert client.retry(handle.id, "dana").startswith("retrying from level 0: sent file")
    steps = {s["step_id"]: s for s in state.steps(handle.id)}
    assert steps["file"]["status"] == "queued" and steps["file"]["action_id"] != old["file"]
    assert store.get(old["file"]).status == "skipped"  # its record never ran: closed, not left queued
