"""A workflow's DAG becomes a Celery canvas: Celery, not a loop of ours, drives the execution.

Steps are layered by depth (level n depends on something at level n-1). Each level is one signature
or a `group`; the levels are `chain`ed, and Celery turns "group followed by a signature" into a
`chord`. So `scan -> (compliance, review) -> notify` is built as chain(scan, group(compliance, review),
notify, complete), which Celery turns into chain(scan, chord([compliance, review], chain(notify, complete))).
A level that holds a step needing approval ends the canvas with a pause; approving it compiles the rest
from the stored spec.
A long workflow is sent in segments of at most OPSQ_WORKFLOW_SEGMENT_LEVELS levels: the last task of a segment
(`opsq.workflow.continue`, on the control queue) compiles and sends the next one from the stored spec, the way
an approval continues. Celery's chain carries the rest of the chain in every message, so one canvas for a
2000-step chain costs time quadratic in its length (~5 steps/s); segments keep every message at most K steps
long, and the whole run linear.
Every step signature carries its own `link_error`, which starts the rollback.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import chain, group
from celery.canvas import Signature

from workers.enqueue import action_signature
from workers.queues import CONTROL_QUEUE
from workers.settings import get_settings
from workflows import state
from workflows.spec import WorkflowSpec, levels
from workflows.status import StepStatus, WorkflowStatus
from workflows.tasks import spec_of, workflow_complete, workflow_continue, workflow_pause, workflow_step_failed


def step_signature(workflow_id: str, spec: WorkflowSpec, step_id: str, action_id: str, priority: str,
                   max_attempts: int) -> Signature:
    step = spec.step(step_id)
    sig = action_signature(action_id=action_id, platform=step.platform, action=step.action, params=step.params,
                           queue=step.platform, priority=priority, max_attempts=step.max_attempts or max_attempts,
                           # action_id: a retry gives the step a new action; this message's is then stale
                           step={"workflow_id": workflow_id, "step_id": step_id, "action_id": action_id,
                                 # its success may end the workflow (workflows.state.step_succeeded)
                                 **({"last_level": True} if step_id in levels(spec)[-1] else {})})
    sig.link_error(workflow_step_failed.s(workflow_id=workflow_id, step_id=step_id))
    return sig


def control(sig: Signature) -> Signature:
    return sig.set(queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)


@dataclass(frozen=True)
class Plan:
    """Which levels the next segment runs, and where it stops: for an approval (`pauses_at`), or, for a long
    workflow, where the next segment starts (`continues_at`)."""

    levels: list[list[str]]
    pauses_at: int | None
    continues_at: int | None = None

    @property
    def step_ids(self) -> list[str]:
        return [s for level in self.levels for s in level]


def plan_segment(spec: WorkflowSpec, *, from_level: int, approved: bool, done: frozenset[str] = frozenset(),
                 max_levels: int | None = None) -> Plan:
    """From `from_level` up to the next level holding a step that needs approval (the level at
    `from_level` itself runs when `approved`), and at most `max_levels` levels with something to run.
    Steps in `done` (already succeeded: a resumed workflow) are left out."""
    layers = levels(spec)
    run: list[list[str]] = []
    for n in range(from_level, len(layers)):
        gated = any(spec.step(s).requires_approval for s in layers[n] if s not in done)
        if gated and not (n == from_level and approved):
            return Plan(run, n)
        todo = [s for s in layers[n] if s not in done]
        if todo:
            if max_levels is not None and len(run) >= max_levels:
                return Plan(run, None, continues_at=n)
            run.append(todo)
    return Plan(run, None)


def compile_segment(workflow_id: str, plan: Plan, spec: WorkflowSpec, action_ids: dict[str, str], *,
                    priority: str, max_attempts: int) -> Signature:
    parts: list[Signature] = []
    for level in plan.levels:
        sigs = [step_signature(workflow_id, spec, s, action_ids[s], priority, max_attempts) for s in level]
        # A step alone in its level keeps no Celery result: nothing reads it (its outcome is in the store and in
        # its execution record), and storing it cost the step two Redis round trips before its successor was
        # sent. A group's steps keep theirs: the chord that follows counts them in the result backend.
        parts.append(sigs[0].set(ignore_result=True) if len(sigs) == 1 else group(sigs))
    if plan.pauses_at is not None:
        end = workflow_pause.si(workflow_id, plan.pauses_at)
    elif plan.continues_at is not None:
        end = workflow_continue.si(workflow_id, plan.continues_at, max_attempts)
    else:
        end = workflow_complete.si(workflow_id)
    parts.append(control(end))
    return chain(*parts)


def send_segment(workflow_id: str, spec: WorkflowSpec, *, from_level: int, approved: bool, priority: str,
                 max_attempts: int, done: frozenset[str] = frozenset()) -> list[str]:
    """Mark the next segment's steps queued and send its canvas; returns their ids."""
    plan = plan_segment(spec, from_level=from_level, approved=approved, done=done,
                        max_levels=get_settings().workflow_segment_levels)
    action_ids = state.queue_steps(workflow_id, plan.step_ids, spec, max_attempts)
    compile_segment(workflow_id, plan, spec, action_ids, priority=priority, max_attempts=max_attempts).apply_async()
    return plan.step_ids


def continue_segment(workflow_id: str, level: int, max_attempts: int) -> list[str]:
    """What `opsq.workflow.continue` does at the end of a segment: send the next one, from `level`. Nothing
    for a workflow no longer running (rolled back, resolved), nor when the steps at `level` were sent
    already (a redelivered continuation must not send a segment twice)."""
    spec, run = spec_of(workflow_id)
    if run["status"] != WorkflowStatus.RUNNING:
        return []
    sent = state.sent_from(workflow_id, level)
    if any(s["level"] == level for s in sent):
        return []
    # Only levels from `level` on are planned, so only their successes matter (a resumed workflow's).
    done = frozenset(s["step_id"] for s in sent if s["status"] == StepStatus.SUCCEEDED)
    ids = send_segment(workflow_id, spec, from_level=level, approved=False,
                       priority=run["priority"], max_attempts=max_attempts, done=done)
    state.record(workflow_id, "continued", detail=f"from level {level}: {len(ids)} step(s) sent")
    return ids
