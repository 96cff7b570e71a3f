"""The workflow client API: submit, follow, approve or deny, roll back, mark resolved."""

from __future__ import annotations

import getpass
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers import audit
from workers.errors import OpsqError, SubmitError
from workers.queues import PRIORITY_NAMES
from workers.settings import get_settings
from workers.store.models import utcnow
from workflows import state
from workflows.compiler import compile_segment, segment_steps
from workflows.spec import WorkflowSpec, load, validate

SETTLED = (*state.FINAL, "awaiting_approval")


@dataclass(frozen=True)
class WorkflowHandle:
    id: str
    deduplicated: bool = False

    def status(self) -> str:
        return str(state.get_run_row(self.id)["status"])

    def state(self) -> dict[str, Any]:
        return state.whole(self.id)

    def wait(self, timeout: float = 120.0, until: tuple[str, ...] = SETTLED) -> str:
        """Block until the workflow reaches one of `until` (by default: finished, or waiting for an
        approval); TimeoutError if it takes longer."""
        deadline = time.monotonic() + timeout
        poll = 0.05
        while True:
            status = self.status()
            if status in until:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {self.id} still {status} after {timeout:g}s")
            time.sleep(poll)
            poll = min(poll * 1.5, 0.5)


def submit_workflow(spec_or_path: str | Path | Mapping[str, Any] | WorkflowSpec, input: Mapping[str, Any] | None = None,
                    priority: str | None = None, idempotency_key: str | None = None,
                    created_by: str | None = None) -> WorkflowHandle:
    """Validate the whole spec (every error at once), record the workflow and its steps, and send the
    first part of its canvas. Invalid specs raise WorkflowInvalid and nothing is stored or queued."""
    spec = validate(load(spec_or_path), input)
    prio = priority or spec.priority
    if prio not in PRIORITY_NAMES:
        raise SubmitError(f"unknown priority {prio!r} (use one of: {', '.join(PRIORITY_NAMES)})")
    input_ = {**spec.input, **(input or {})}
    settings = get_settings()
    if idempotency_key is not None:
        from workers.guards.idempotency import claim

        # Claimed under a placeholder first: the workflow id is known only once it is stored.
        first = claim(f"wf:{idempotency_key}", "pending", settings.idempotency_ttl_s)
        if first is not None:
            if first == "pending":
                raise SubmitError(f"a workflow with idempotency key {idempotency_key!r} is being submitted now")
            return WorkflowHandle(first, deduplicated=True)
    try:
        workflow_id = state.create_run(spec, input_, prio, idempotency_key=idempotency_key,
                                       created_by=created_by or _user())
        try:
            state.transition(workflow_id, "running", allowed_from=("pending",), event="started")
            launch(workflow_id, spec, from_level=0, approved=False)
        except Exception:
            state.delete_run(workflow_id)
            raise
    except Exception:
        if idempotency_key is not None:
            from workers.guards.idempotency import release

            release(f"wf:{idempotency_key}", "pending")
        raise
    if idempotency_key is not None:
        from workers.guards import keys
        from workers.guards.connection import guard_redis

        guard_redis().set(keys.idempotency(f"wf:{idempotency_key}"), workflow_id, ex=settings.idempotency_ttl_s)
    return WorkflowHandle(workflow_id)


def launch(workflow_id: str, spec: WorkflowSpec, *, from_level: int, approved: bool) -> list[str]:
    """Send the next part of the workflow's canvas: from `from_level` up to the next approval gate."""
    run = state.get_run_row(workflow_id)
    settings = get_settings()
    action_ids = state.queue_steps(workflow_id, segment_steps(spec, from_level=from_level, approved=approved),
                                   spec, settings.max_attempts)
    segment = compile_segment(workflow_id, spec, action_ids, from_level=from_level, approved=approved,
                              priority=run["priority"], max_attempts=settings.max_attempts)
    segment.canvas.apply_async()
    return segment.step_ids


def approve(approval_id: str, actor: str | None = None, comment: str | None = None) -> WorkflowHandle:
    """Resume the workflow from the gated steps: the rest of its canvas is compiled from the stored spec,
    so this works however long after, and whichever workers are running now."""
    approval = state.get_approval(approval_id)
    _decide(approval, "approved", actor, comment)
    wid = approval["workflow_id"]
    detail = f"approval {approval_id} by {actor or _user()}" + (f": {comment}" if comment else "")
    if not state.transition(wid, "running", allowed_from=("awaiting_approval",), event="approved", detail=detail):
        raise OpsqError(f"workflow {wid} is {state.get_run_row(wid)['status']}, not awaiting approval")
    audit.append("approve", f"approval:{approval_id}", {"workflow_id": wid, "comment": comment}, actor=actor)
    spec = WorkflowSpec.model_validate(state.get_run_row(wid)["spec"])
    launch(wid, spec, from_level=approval["level"], approved=True)
    return WorkflowHandle(wid)


def deny(approval_id: str, reason: str, actor: str | None = None) -> WorkflowHandle:
    from workflows.tasks import start_rollback

    approval = state.get_approval(approval_id)
    _decide(approval, "denied", actor, reason)
    audit.append("deny", f"approval:{approval_id}", {"workflow_id": approval["workflow_id"], "reason": reason},
                 actor=actor)
    start_rollback(approval["workflow_id"], f"approval {approval_id} denied by {actor or _user()}: {reason}")
    return WorkflowHandle(approval["workflow_id"])


def expire_due() -> list[str]:
    """Expired approvals roll their workflows back (beat runs this every minute). Returns their ids."""
    from workflows.tasks import start_rollback

    expired = []
    for approval in state.due_approvals(utcnow()):
        if state.decide_approval(approval["id"], "expired", "opsqueue", "approval expired"):
            audit.append("approval_expired", f"approval:{approval['id']}",
                         {"workflow_id": approval["workflow_id"]}, actor="opsqueue")
            start_rollback(approval["workflow_id"], f"approval {approval['id']} expired")
            expired.append(approval["id"])
    return expired


def _decide(approval: dict[str, Any], to: str, actor: str | None, comment: str | None) -> None:
    if approval["expires_at"] <= utcnow() and approval["status"] == "pending":
        expire_due()
        raise OpsqError(f"approval {approval['id']} expired at {approval['expires_at']:%Y-%m-%d %H:%M:%S} UTC; "
                        "its workflow is rolled back")
    if not state.decide_approval(approval["id"], to, actor or _user(), comment):
        current = state.get_approval(approval["id"])["status"]
        raise OpsqError(f"approval {approval['id']} is already {current}")


def rollback(workflow_id: str, actor: str | None = None) -> str:
    """Roll back now, or retry a rollback that failed (only compensations not yet done run again)."""
    from workflows.tasks import start_rollback, workflow_rollback

    run = state.get_run_row(workflow_id)
    who = actor or _user()
    audit.append("workflow_rollback", f"workflow:{workflow_id}", {"status": run["status"]}, actor=who)
    if run["status"] == "rollback_failed":
        from workflows.tasks import forget_failed_undos

        forget_failed_undos(workflow_id)
        state.reset_failed_compensations(workflow_id)
        if not state.transition(workflow_id, "rolling_back", allowed_from=("rollback_failed",),
                                event="rollback_retried", detail=f"by {who}"):
            raise OpsqError(f"workflow {workflow_id} changed state meanwhile; check `opsq workflow status`")
        from workers.queues import CONTROL_QUEUE

        workflow_rollback.apply_async(args=[workflow_id], queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)
        return "retrying the compensations that did not finish"
    if run["status"] in ("running", "awaiting_approval", "failed"):
        if run["status"] == "awaiting_approval":
            for a in state.approvals(workflow_id=workflow_id):
                state.decide_approval(a["id"], "denied", who, "workflow rolled back by hand")
        start_rollback(workflow_id, f"rolled back by hand by {who}")
        return "rollback started"
    raise OpsqError(f"workflow {workflow_id} is {run['status']}: nothing to roll back")


def mark_resolved(workflow_id: str, note: str, actor: str | None = None) -> None:
    """A person fixed it by hand; recorded with who and why."""
    if not note.strip():
        raise SubmitError("a note saying what was done is required")
    who = actor or _user()
    from sqlalchemy import update

    from workers.store.db import session
    from workers.store.models import WorkflowRun

    if not state.transition(workflow_id, "resolved",
                            allowed_from=("rollback_failed", "failed", "rolling_back", "awaiting_approval"),
                            event="resolved", detail=f"by {who}: {note}"):
        raise OpsqError(f"workflow {workflow_id} is {state.get_run_row(workflow_id)['status']}; only failed, "
                        "rolling back, rollback_failed or waiting workflows can be marked resolved")
    with session() as s:
        s.execute(update(WorkflowRun).where(WorkflowRun.id == workflow_id).values(resolution_note=f"{who}: {note}"))
        audit.append("mark_resolved", f"workflow:{workflow_id}", {"note": note}, actor=who, conn=s.connection())


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user in some containers
        return "unknown"
