"""What `WorkflowHandle.wait()` returns: a workflow's result as an object, the counterpart of the action's
ActionView (`ActionHandle.wait()`), with the same names where they mean the same thing (`id`, `status`, `error`,
`done`, `priority`, `created_at`, `finished_at`, `duration_s`, `to_dict()`); a workflow's `outputs` (by step)
stand where an action has its `result`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workflows import state
from workflows.status import ApprovalStatus, StepStatus, WorkflowStatus


@dataclass(frozen=True)
class StepView:
    id: str
    status: str
    platform: str
    action: str
    #: the step's action record (`opsq action status ACTION_ID`)
    action_id: str
    attempts: int
    output: dict[str, Any] | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class WorkflowView:
    id: str
    name: str
    status: str
    priority: str
    #: why it failed, was rolled back or cancelled (None when it succeeded)
    error: str | None
    #: the step that failed, if one did
    failed_step: str | None
    created_at: datetime
    finished_at: datetime | None
    #: every step, in level order
    steps: list[StepView] = field(default_factory=list)
    #: the approvals it waits for (`opsq approvals approve ID`), when its status is awaiting_approval
    pending_approvals: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Finished for good: succeeded, failed, rolled back (or its rollback failed), cancelled, resolved."""
        return self.status in state.FINAL

    @property
    def outputs(self) -> dict[str, Any]:
        """The succeeded steps' outputs by step id, as templates read them (`steps.<id>.output`)."""
        return {s.id: s.output for s in self.steps if s.status == StepStatus.SUCCEEDED}

    @property
    def duration_s(self) -> float | None:
        return (self.finished_at - self.created_at).total_seconds() if self.finished_at else None

    def step(self, step_id: str) -> StepView:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "steps"}
        for key in ("created_at", "finished_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["steps"] = [{**s.__dict__, "started_at": s.started_at.isoformat() if s.started_at else None,
                         "finished_at": s.finished_at.isoformat() if s.finished_at else None} for s in self.steps]
        out["outputs"] = self.outputs
        out["duration_s"] = self.duration_s
        return out


def workflow_view(workflow_id: str) -> WorkflowView:
    """The workflow as the store has it now (NotFound for an unknown id)."""
    run = state.run_head(workflow_id)
    steps = [StepView(id=s["step_id"], status=s["status"], platform=s["platform"], action=s["action"],
                      action_id=s["action_id"], attempts=s["attempts"], output=s["output"], error=s["error"],
                      started_at=s["started_at"], finished_at=s["finished_at"]) for s in state.steps(workflow_id)]
    pending = ([a["id"] for a in state.approvals(status=ApprovalStatus.PENDING, workflow_id=workflow_id)]
               if run["status"] == WorkflowStatus.AWAITING_APPROVAL else [])  # a query saved on the common path
    return WorkflowView(id=workflow_id, name=run["name"], status=run["status"], priority=run["priority"],
                        error=run["error"], failed_step=run["failed_step"], created_at=run["created_at"],
                        finished_at=run["finished_at"], steps=steps, pending_approvals=pending)
