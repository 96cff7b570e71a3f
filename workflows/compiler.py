"""A workflow's DAG becomes a Celery canvas: Celery, not a loop of ours, drives the execution.

Steps are layered by depth (level n depends on something at level n-1). Each level is one signature
or a `group`; the levels are `chain`ed, and Celery turns "group followed by a signature" into a
`chord`. So `scan -> (compliance, review) -> notify` is built as chain(scan, group(compliance, review),
notify, complete), which Celery turns into chain(scan, chord([compliance, review], chain(notify, complete))).
A level that holds a step needing approval ends the canvas with a pause; approving it compiles the rest
from the stored spec.
Every step signature carries its own `link_error`, which starts the rollback.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import chain, group
from celery.canvas import Signature

from workers.enqueue import action_signature
from workers.queues import CONTROL_QUEUE
from workflows.spec import WorkflowSpec, levels
from workflows.tasks import workflow_complete, workflow_pause, workflow_step_failed


def step_signature(workflow_id: str, spec: WorkflowSpec, step_id: str, action_id: str, priority: str,
                   max_attempts: int) -> Signature:
    step = spec.step(step_id)
    sig = action_signature(action_id=action_id, platform=step.platform, action=step.action, params=step.params,
                           queue=step.platform, priority=priority, max_attempts=step.max_attempts or max_attempts,
                           step={"workflow_id": workflow_id, "step_id": step_id})
    sig.link_error(workflow_step_failed.s(workflow_id=workflow_id, step_id=step_id))
    return sig


def control(sig: Signature) -> Signature:
    return sig.set(queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)


@dataclass(frozen=True)
class Plan:
    """Which levels the next segment runs, and where it stops for an approval."""

    levels: list[list[str]]
    pauses_at: int | None

    @property
    def step_ids(self) -> list[str]:
        return [s for level in self.levels for s in level]


def plan_segment(spec: WorkflowSpec, *, from_level: int, approved: bool, done: frozenset[str] = frozenset()) -> Plan:
    """From `from_level` up to the next level holding a step that needs approval (the level at
    `from_level` itself runs when `approved`). Steps in `done` (already succeeded: a resumed workflow)
    are left out."""
    layers = levels(spec)
    run: list[list[str]] = []
    for n in range(from_level, len(layers)):
        gated = any(spec.step(s).requires_approval for s in layers[n] if s not in done)
        if gated and not (n == from_level and approved):
            return Plan(run, n)
        todo = [s for s in layers[n] if s not in done]
        if todo:
            run.append(todo)
    return Plan(run, None)


def compile_segment(workflow_id: str, plan: Plan, spec: WorkflowSpec, action_ids: dict[str, str], *,
                    priority: str, max_attempts: int) -> Signature:
    parts: list[Signature] = []
    for level in plan.levels:
        sigs = [step_signature(workflow_id, spec, s, action_ids[s], priority, max_attempts) for s in level]
        parts.append(sigs[0] if len(sigs) == 1 else group(sigs))
    end = (workflow_pause.si(workflow_id, plan.pauses_at) if plan.pauses_at is not None
           else workflow_complete.si(workflow_id))
    parts.append(control(end))
    return chain(*parts)
