"""WorkflowHandle.wait() returns a view whose status is one it was waiting for, even when the workflow moves on
between the read that ended the wait and the read of the view (an approval coming just then). The interleaving
is forced through the store's own reads: the approval is made (a real transition, published) at the moment the
view reads the run; nothing sleeps to synchronise. Real Redis (the wait's notifications) and a SQLite store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from workers.settings import reload_settings
from workers.store import db
from workflows import state
from workflows.client import WorkflowHandle
from workflows.spec import check
from workflows.status import WorkflowStatus

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_client: Any, redis_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSQ_REDIS_URL", redis_url)
    monkeypatch.setenv("OPSQ_DATABASE_URL", sqlite_url)
    reload_settings()
    db.reset_engine()


def _awaiting_approval() -> str:
    spec = check({"name": "gated", "steps": [{"id": "ship", "platform": "noop", "action": "noop",
                                              "requires_approval": True}]})
    workflow_id = uuid.uuid4().hex
    state.create_run(spec, {}, "normal", workflow_id=workflow_id, idempotency_key=None, created_by="test")
    assert state.transition(workflow_id, WorkflowStatus.AWAITING_APPROVAL, allowed_from=(WorkflowStatus.PENDING,))
    return workflow_id


def _once_before(real: Callable[[str], Any], change: Callable[[str], None]) -> Callable[[str], Any]:
    """`real`, with `change` made in the store just before its first call (a concurrent writer's timing)."""
    pending = [change]

    def read(workflow_id: str) -> Any:
        while pending:
            pending.pop()(workflow_id)
        return real(workflow_id)
    return read


def test_an_approval_between_the_wait_and_its_view_does_not_leak_a_running_status(store, monkeypatch):
    workflow_id = _awaiting_approval()
    seen: list[str] = []
    real_status = state.run_status

    def status(wid: str) -> str:
        seen.append(real_status(wid))
        return seen[-1]

    def approve(wid: str) -> None:  # someone approves: the workflow runs again
        assert state.transition(wid, WorkflowStatus.RUNNING, allowed_from=(WorkflowStatus.AWAITING_APPROVAL,))
        # ... and, once the wait has read it running, its step finishes (what the worker would do next).
        monkeypatch.setattr(state, "run_status", _once_after(status, finish))

    def finish(wid: str) -> None:
        assert state.transition(wid, WorkflowStatus.SUCCEEDED, allowed_from=(WorkflowStatus.RUNNING,))

    monkeypatch.setattr(state, "run_status", status)
    monkeypatch.setattr(state, "run_head", _once_before(state.run_head, approve))
    view = WorkflowHandle(workflow_id).wait(timeout=30)
    # The wait ended on awaiting_approval, but its view read `running`: it waited on, to the next settled status.
    assert view.status == WorkflowStatus.SUCCEEDED and view.done and view.pending_approvals == []
    assert seen[0] == WorkflowStatus.AWAITING_APPROVAL and WorkflowStatus.RUNNING in seen, seen


def test_the_view_status_is_always_one_of_until(store, monkeypatch):
    workflow_id = _awaiting_approval()

    def approve(wid: str) -> None:
        assert state.transition(wid, WorkflowStatus.RUNNING, allowed_from=(WorkflowStatus.AWAITING_APPROVAL,))

    monkeypatch.setattr(state, "run_head", _once_before(state.run_head, approve))
    # Waiting for the gate only: the view read after the approval says running, so the wait goes on and times out
    # naming what it saw, rather than return a `running` view as if the gate were still there.
    with pytest.raises(TimeoutError, match=f"workflow {workflow_id} still running after 0.5s"):
        WorkflowHandle(workflow_id).wait(timeout=0.5, until=(WorkflowStatus.AWAITING_APPROVAL,))


def _once_after(real: Callable[[str], Any], change: Callable[[str], None]) -> Callable[[str], Any]:
    """`real`, with `change` made in the store just after its first call returns (its reader then holds a stale
    value: it learns of the change from the notification the change publishes)."""
    pending = [change]

    def read(workflow_id: str) -> Any:
        value = real(workflow_id)
        while pending:
            pending.pop()(workflow_id)
        return value
    return read
