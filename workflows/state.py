"""A workflow's durable state: runs, steps, compensations, approvals and the timeline, in the store.

Everything about a workflow can be read back from here alone; every status change is a conditional
UPDATE, so two workers (or a worker and an operator) can never both win the same transition.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Result, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workers import waiting
from workers.errors import NotFound, OpsqError
from workers.guards import keys
from workers.redaction import redact
from workers.status import OPEN_ACTION_STATUSES, ActionStatus
from workers.store import actions, audit
from workers.store.api_tokens import person_of
from workers.store.db import require, session
from workers.store.models import ActionRun, as_utc, utcnow
from workflows.models import Approval, ApprovalVote, Compensation, WorkflowEvent, WorkflowRun, WorkflowStep
from workflows.spec import WorkflowSpec, levels
from workflows.status import ApprovalStatus, CompensationStatus, StepStatus, WorkflowStatus

FINAL = (WorkflowStatus.SUCCEEDED, WorkflowStatus.ROLLED_BACK, WorkflowStatus.ROLLBACK_FAILED, WorkflowStatus.FAILED,
         WorkflowStatus.RESOLVED, WorkflowStatus.CANCELLED)


def _rowcount(res: Result[Any]) -> int:
    """The rows an UPDATE matched. Session.execute is typed as returning any Result; for an UPDATE or a
    DELETE it returns a CursorResult, which carries the count."""
    assert isinstance(res, CursorResult)
    return res.rowcount


def _row(obj: Any) -> dict[str, Any]:
    return {c.key: as_utc(getattr(obj, c.key)) for c in obj.__table__.columns}


def create_run(spec: WorkflowSpec, input_: dict[str, Any], priority: str, *, workflow_id: str,
               idempotency_key: str | None, created_by: str | None, scheduled_for: datetime | None = None,
               expires_at: datetime | None = None) -> str:
    """Records the workflow (`pending`), its steps and its audit entry in one transaction; `transition` and
    `queue_steps` start it (for a scheduled one, the beat leader when it is due: workflows.client.release_due)."""
    _insert_run(spec, input_, priority, workflow_id=workflow_id, idempotency_key=idempotency_key,
                created_by=created_by, queued=None, max_attempts=1, scheduled_for=scheduled_for,
                expires_at=expires_at)
    return workflow_id


def start_run(spec: WorkflowSpec, input_: dict[str, Any], priority: str, *, workflow_id: str,
              idempotency_key: str | None, created_by: str | None, queued: Iterable[str],
              max_attempts: int, expires_at: datetime | None = None) -> dict[str, str]:
    """create_run, transition to `running` and queue_steps for the first segment (`queued`), in one
    transaction: the submit's bookkeeping in one commit rather than four (each a durable commit on
    PostgreSQL). Returns the queued steps' action ids (step id -> action id)."""
    return _insert_run(spec, input_, priority, workflow_id=workflow_id, idempotency_key=idempotency_key,
                       created_by=created_by, queued=queued, max_attempts=max_attempts, expires_at=expires_at)


def _insert_run(spec: WorkflowSpec, input_: dict[str, Any], priority: str, *, workflow_id: str,
                idempotency_key: str | None, created_by: str | None, queued: Iterable[str] | None,
                max_attempts: int, expires_at: datetime | None = None,
                scheduled_for: datetime | None = None) -> dict[str, str]:
    now = utcnow()
    depth = {sid: n for n, level in enumerate(levels(spec)) for sid in level}
    first = set(queued or ())
    action_ids = {step.id: uuid.uuid4().hex for step in spec.steps}
    status = WorkflowStatus.RUNNING if queued is not None else WorkflowStatus.PENDING
    with session() as s:
        s.execute(insert(WorkflowRun).values(
            id=workflow_id, name=spec.name, spec=spec.model_dump(mode="json"), input=redact(input_), priority=priority,
            status=status, idempotency_key=idempotency_key, resume_level=0, created_by=created_by, created_at=now,
            updated_at=now, expires_at=expires_at, scheduled_for=scheduled_for))
        s.execute(insert(WorkflowStep), [
            {"workflow_id": workflow_id, "step_id": step.id, "action_id": action_ids[step.id],
             "platform": step.platform, "action": step.action, "level": depth[step.id],
             "status": StepStatus.QUEUED if step.id in first else StepStatus.PENDING, "attempts": 0}
            for step in spec.steps])
        if first:
            s.execute(insert(ActionRun), [
                {"id": action_ids[step.id], "platform": step.platform, "action": step.action,
                 "params": redact(step.params), "priority": priority, "queue": step.platform,
                 "status": ActionStatus.QUEUED, "attempts": 0, "max_attempts": step.max_attempts or max_attempts,
                 "workflow_id": workflow_id, "created_at": now, "updated_at": now}
                for step in spec.steps if step.id in first])
        when = f", scheduled for {scheduled_for:%Y-%m-%d %H:%M:%S} UTC" if scheduled_for is not None else ""
        events = [{"workflow_id": workflow_id, "at": now, "kind": "submitted",
                   "detail": f"{spec.name}: {len(spec.steps)} steps, priority {priority}{when}"}]
        if queued is not None:
            events.append({"workflow_id": workflow_id, "at": now, "kind": "started", "detail": None})
        s.execute(insert(WorkflowEvent), events)
        audit.append("workflow_submit", f"workflow:{workflow_id}", {"name": spec.name, "priority": priority},
                     actor=created_by, conn=s.connection())
    return {sid: action_ids[sid] for sid in first}


def delete_run(workflow_id: str, reason: str | None = None) -> None:
    """Undo create_run when nothing could be enqueued: no half-enqueued workflow is left behind. Its
    `workflow_submit` entry is chained already (the chain cannot be edited): with `reason`, a
    `workflow_submit_withdrawn` entry saying why goes in the same transaction."""

    with session() as s:
        if reason is not None:
            created_by = s.scalar(select(WorkflowRun.created_by).where(WorkflowRun.id == workflow_id))
            _audit(s, ("workflow_submit_withdrawn", f"workflow:{workflow_id}", {"reason": reason}, created_by))
        action_ids = list(s.scalars(select(WorkflowStep.action_id).where(WorkflowStep.workflow_id == workflow_id)))
        for model in (WorkflowEvent, Approval, Compensation, WorkflowStep):
            s.execute(delete(model).where(model.workflow_id == workflow_id))
        s.execute(delete(ActionRun).where(ActionRun.id.in_(action_ids)))
        s.execute(delete(WorkflowRun).where(WorkflowRun.id == workflow_id))


def queue_steps(workflow_id: str, step_ids: Iterable[str], spec: WorkflowSpec, max_attempts: int) -> dict[str, str]:
    """Marks the steps of the segment about to be enqueued, with an action record each. Returns
    step id -> action id."""
    ids = list(step_ids)
    now = utcnow()
    run = run_head(workflow_id)
    with session() as s:
        rows = s.scalars(select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id,
                                                    WorkflowStep.step_id.in_(ids))).all()
        out = {}
        for row in rows:
            step = spec.step(row.step_id)
            out[row.step_id] = row.action_id
            exists = s.get(ActionRun, row.action_id)
            if exists is None:
                s.execute(insert(ActionRun).values(
                    id=row.action_id, platform=row.platform, action=row.action, params=redact(step.params),
                    priority=run["priority"], queue=row.platform, status=ActionStatus.QUEUED, attempts=0,
                    max_attempts=step.max_attempts or max_attempts, workflow_id=workflow_id, created_at=now,
                    updated_at=now))
            row.status = StepStatus.QUEUED
    return out


def get_run_row(workflow_id: str) -> dict[str, Any]:
    with session() as s:
        return _row(require(s, WorkflowRun, workflow_id, "workflow"))


# Every column of the run but its spec, which grows with the workflow's length: what the hot paths read.
_HEAD = tuple(c for c in WorkflowRun.__table__.columns if c.key != "spec")


def run_head(workflow_id: str) -> dict[str, Any]:
    """The run's row without its spec (get_run_row has it), read on every step: the spec is read once per
    process and workflow (workflows.tasks.spec_of)."""
    with session() as s:
        row = s.execute(select(*_HEAD).where(WorkflowRun.id == workflow_id)).mappings().first()
    if row is None:
        raise NotFound(f"no workflow with id {workflow_id}")
    return {k: as_utc(v) for k, v in row.items()}


def run_status(workflow_id: str) -> str:
    """The run's status alone (what a waiter reads on each notification)."""
    with session() as s:
        status: str | None = s.scalar(select(WorkflowRun.status).where(WorkflowRun.id == workflow_id))
    if status is None:
        raise NotFound(f"no workflow with id {workflow_id}")
    return status


def run_spec(workflow_id: str) -> dict[str, Any]:
    """The spec as submitted (never changed afterwards)."""
    with session() as s:
        spec: dict[str, Any] | None = s.scalar(select(WorkflowRun.spec).where(WorkflowRun.id == workflow_id))
    if spec is None:
        raise NotFound(f"no workflow with id {workflow_id}")
    return spec


#: An audit entry written with a state change, in its transaction: (action, target, detail, actor).
AuditAs = tuple[str, str, dict[str, Any], str | None]


def transition(workflow_id: str, to: str, *, allowed_from: Iterable[str], error: str | None = None,
               failed_step: str | None = None, event: str | None = None, detail: str | None = None,
               audit_as: AuditAs | None = None) -> bool:
    """Move the workflow to `to` only if it is in one of `allowed_from`; True if this call did it.
    `audit_as` is recorded in the same transaction, and only if the move happened."""
    now = utcnow()
    values: dict[str, Any] = {"status": to, "updated_at": now}
    if to in FINAL:
        values["finished_at"] = now
    if error is not None:
        values["error"] = error
    if failed_step is not None:
        values["failed_step"] = failed_step
    with session() as s:
        res = s.execute(update(WorkflowRun).where(WorkflowRun.id == workflow_id,
                                                  WorkflowRun.status.in_(list(allowed_from))).values(**values))
        won = _rowcount(res) == 1
        if won:
            s.add(WorkflowEvent(workflow_id=workflow_id, at=now, kind=event or to, step_id=failed_step,
                                detail=detail or error))
            if audit_as is not None:
                s.flush()
                _audit(s, audit_as)
    if won:
        # After the commit: whoever waits for this workflow (WorkflowHandle.wait) reads the new status at once.
        waiting.publish(keys.workflow_channel(workflow_id), to)
    return won


def _audit(s: Session, entry: AuditAs) -> None:
    action, target, detail, actor = entry
    audit.append(action, target, detail, actor=actor, conn=s.connection())


def set_resume_level(workflow_id: str, level: int) -> None:
    with session() as s:
        s.execute(update(WorkflowRun).where(WorkflowRun.id == workflow_id).values(resume_level=level))


def record(workflow_id: str, kind: str, *, step_id: str | None = None, detail: str | None = None,
           audit_as: AuditAs | None = None) -> None:
    """An event on the workflow's timeline (and `audit_as` in the same transaction)."""
    with session() as s:
        s.add(WorkflowEvent(workflow_id=workflow_id, at=utcnow(), kind=kind, step_id=step_id, detail=detail))
        if audit_as is not None:
            s.flush()
            _audit(s, audit_as)


def begin_step(workflow_id: str, step_id: str, attempt: int, wanted: Iterable[str] | None,
               action_id: str | None = None) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """What a step needs before its call, in one transaction: its run's row (without the spec), the outputs of
    the steps in `wanted` (None: all of them), and the claim of the step, made only while the workflow runs.
    Returns (run, outputs, claimed); nothing is claimed for a run that is not running. `action_id` (the
    message's): only while the step is still that action; a retried workflow gave it a new one."""
    with session() as s:
        head = s.connection().execute(select(*_HEAD).where(WorkflowRun.id == workflow_id)).mappings().first()
        if head is None:
            raise NotFound(f"no workflow with id {workflow_id}")
        run = {k: as_utc(v) for k, v in head.items()}
        if run["status"] != WorkflowStatus.RUNNING:
            return run, {}, False
        outputs = _outputs(s, workflow_id, wanted)
        return run, outputs, _claim(s, workflow_id, step_id, attempt, action_id)


def _event(s: Session, workflow_id: str, kind: str, *, at: Any, step_id: str | None = None,
           detail: str | None = None) -> None:
    """A timeline entry on the step path, as a plain INSERT on the session's connection: the ORM's unit of work
    (an object, a flush, RETURNING its id) cost more than the statement itself there (~1 ms a step on
    PostgreSQL, profiled). Written in order with the statements around it."""
    s.connection().execute(insert(WorkflowEvent).values(workflow_id=workflow_id, at=at, kind=kind, step_id=step_id,
                                                        detail=detail))


# Claims the step (queued/running -> running) only while the workflow runs, in one statement, so a rollback that
# skipped it can never race this. True also for a step already succeeded (a redelivered message, which the
# guards answer with the stored result). A message of the action the step was before a retry (a redelivery
# of the failed run's) claims nothing: it would run the step a second time, beside its new action.
def _claim(s: Session, workflow_id: str, step_id: str, attempt: int, action_id: str | None = None) -> bool:
    now = utcnow()
    running = select(WorkflowRun.id).where(WorkflowRun.id == workflow_id, WorkflowRun.status == WorkflowStatus.RUNNING)
    this_step = [WorkflowStep.workflow_id == workflow_id, WorkflowStep.step_id == step_id]
    if action_id is not None:  # None: a message sent before the step context carried it
        this_step.append(WorkflowStep.action_id == action_id)
    res = s.connection().execute(update(WorkflowStep).where(
        *this_step, WorkflowStep.status.in_([StepStatus.QUEUED, StepStatus.RUNNING]), running.exists())
        .values(status=StepStatus.RUNNING, attempts=attempt, started_at=func.coalesce(WorkflowStep.started_at, now)))
    if _rowcount(res):
        if attempt == 1:
            _event(s, workflow_id, "step_started", at=now, step_id=step_id)
        return True
    status = s.scalar(select(WorkflowStep.status).where(*this_step))
    return status == StepStatus.SUCCEEDED


def step_succeeded(workflow_id: str, step_id: str, params: dict[str, Any], output: dict[str, Any], *,
                   action_row: dict[str, Any] | None = None, last_level: bool = False) -> bool:
    """Records the step's output and its place in the order of completion (the rollback undoes steps in
    the reverse of it). Completions of one workflow are serialised on its run row, so two branches
    finishing at once get distinct, correctly ordered numbers.

    In the same transaction: `action_row` (workers.store.actions.succeeded_row), the step's action record;
    and, for a step of the workflow's last level (`last_level`) after which no step is left unfinished, the
    workflow's success, so the last step ends its workflow without waiting for `opsq.workflow.complete`'s
    message (which still comes, and finds it done). One commit per step instead of two or three. It commits
    durably: a success a server crash lost would leave the workflow waiting for detect_stuck (an asynchronous
    commit saved 2.5-3 ms per step here; docs/PERFORMANCE.md). True if this call recorded the step; the
    workflow's success is published after the commit."""
    now = utcnow()
    completed = False
    with session() as s:
        if action_row is not None:
            actions.write_succeeded(s.connection(), [action_row])
        # Lock the run row first (PostgreSQL: row lock; SQLite: the write lock), then number. The MAX is read
        # from the end of ix_workflow_steps_completed_seq, not by walking every step of the workflow.
        conn = s.connection()
        conn.execute(update(WorkflowRun).where(WorkflowRun.id == workflow_id).values(updated_at=now))
        seq = (conn.scalar(select(func.max(WorkflowStep.completed_seq))
                           .where(WorkflowStep.workflow_id == workflow_id)) or 0) + 1
        res = conn.execute(update(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id,
                                                      WorkflowStep.step_id == step_id,
                                                      WorkflowStep.status.not_in([StepStatus.SUCCEEDED,
                                                                                  StepStatus.SKIPPED]))
                           .values(status=StepStatus.SUCCEEDED, params=redact(params), output=redact(output),
                                   error=None, completed_seq=seq, finished_at=now,
                                   started_at=func.coalesce(WorkflowStep.started_at, now)))
        recorded = bool(_rowcount(res))
        if recorded:
            _event(s, workflow_id, "step_succeeded", at=now, step_id=step_id)
        if recorded and last_level:
            # Only the last level's steps look (once each): a count per step would make a long chain quadratic.
            left = conn.scalar(select(func.count()).select_from(WorkflowStep).where(
                WorkflowStep.workflow_id == workflow_id, WorkflowStep.status != StepStatus.SUCCEEDED))
            if not left:
                done = conn.execute(update(WorkflowRun).where(WorkflowRun.id == workflow_id,
                                                              WorkflowRun.status == WorkflowStatus.RUNNING)
                                    .values(status=WorkflowStatus.SUCCEEDED, finished_at=now, updated_at=now))
                if _rowcount(done):
                    _event(s, workflow_id, WorkflowStatus.SUCCEEDED, at=now)
                    completed = True
    if completed:
        waiting.publish(keys.workflow_channel(workflow_id), WorkflowStatus.SUCCEEDED)
    return recorded


def retry_failed(workflow_id: str, step_ids: list[str], *, detail: str, audit_as: AuditAs) -> dict[str, str] | None:
    """A `failed` workflow back to `running` with `step_ids` reset to `pending`, each under a new action id (the
    old action's execution record says it failed: the guards would not run it again; and a stale message of it
    claims nothing, see _claim), in one transaction with its timeline event and `audit_as`. The old actions'
    records stay as they ended; one that never ran (queued) is closed as skipped. Returns step id -> new action
    id; None if the workflow was not `failed` (another retry won)."""
    now = utcnow()
    renewed = {sid: uuid.uuid4().hex for sid in step_ids}
    with session() as s:
        res = s.execute(update(WorkflowRun).where(WorkflowRun.id == workflow_id,
                                                  WorkflowRun.status == WorkflowStatus.FAILED)
                        .values(status=WorkflowStatus.RUNNING, error=None, failed_step=None, finished_at=None,
                                updated_at=now, expires_at=None))  # a deadline passed would cancel it at once
        if _rowcount(res) != 1:
            return None
        old = dict(s.execute(select(WorkflowStep.step_id, WorkflowStep.action_id).where(
            WorkflowStep.workflow_id == workflow_id, WorkflowStep.step_id.in_(step_ids))).all())
        for sid, action_id in renewed.items():
            s.execute(update(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id, WorkflowStep.step_id == sid)
                      .values(action_id=action_id, status=StepStatus.PENDING, params=None, output=None, error=None,
                              attempts=0, completed_seq=None, started_at=None, finished_at=None))
        s.execute(update(ActionRun).where(ActionRun.id.in_(list(old.values())),
                                          ActionRun.status.in_(list(OPEN_ACTION_STATUSES)))
                  .values(status=ActionStatus.SKIPPED, error="its workflow was retried: the step runs as a new action",
                          error_kind=None, next_attempt_at=None, finished_at=now, updated_at=now))
        s.add(WorkflowEvent(workflow_id=workflow_id, at=now, kind="retried", detail=detail))
        s.flush()
        _audit(s, audit_as)
    waiting.publish(keys.workflow_channel(workflow_id), WorkflowStatus.RUNNING)
    return renewed


def step_failed(workflow_id: str, step_id: str, error: str) -> None:
    _end_step(workflow_id, step_id, [StepStatus.QUEUED, StepStatus.RUNNING], StepStatus.FAILED, error)


def step_skipped(workflow_id: str, step_id: str, reason: str) -> None:
    _end_step(workflow_id, step_id, [StepStatus.PENDING, StepStatus.QUEUED], StepStatus.SKIPPED, reason)


def _end_step(workflow_id: str, step_id: str, from_statuses: list[StepStatus], status: StepStatus, why: str) -> None:
    """Moves the step to `status` only from one of `from_statuses` (a conditional UPDATE: of concurrent
    callers one wins), with its timeline event."""
    now = utcnow()
    with session() as s:
        res = s.execute(update(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id,
                                                   WorkflowStep.step_id == step_id,
                                                   WorkflowStep.status.in_(from_statuses))
                        .values(status=status, error=why, finished_at=now))
        if _rowcount(res):
            s.add(WorkflowEvent(workflow_id=workflow_id, at=now, kind=f"step_{status}", step_id=step_id, detail=why))


def step_for_action(action_id: str) -> dict[str, Any] | None:
    with session() as s:
        row = s.scalar(select(WorkflowStep).where(WorkflowStep.action_id == action_id))
        return _row(row) if row else None


def step(workflow_id: str, step_id: str) -> dict[str, Any]:
    with session() as s:
        return _row(require(s, WorkflowStep, (workflow_id, step_id), "workflow step"))


def steps(workflow_id: str) -> list[dict[str, Any]]:
    with session() as s:
        rows = s.scalars(select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id)
                         .order_by(WorkflowStep.level, WorkflowStep.step_id)).all()
        return [_row(r) for r in rows]


def sent_from(workflow_id: str, level: int) -> list[dict[str, Any]]:
    """The steps at `level` or deeper that were sent (no longer pending), with their level and status: what a
    segment's continuation needs to know, instead of every step of the workflow (state.steps) at each segment."""
    with session() as s:
        rows = s.execute(select(WorkflowStep.step_id, WorkflowStep.level, WorkflowStep.status)
                         .where(WorkflowStep.workflow_id == workflow_id, WorkflowStep.level >= level,
                                WorkflowStep.status != StepStatus.PENDING)).all()
    return [{"step_id": sid, "level": lvl, "status": status} for sid, lvl, status in rows]


def outputs(workflow_id: str, step_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """The succeeded steps' outputs, as templates read them (`steps.<id>.output`): all of them, or those of
    `step_ids` only, by key (a step's templates name a few steps; reading every earlier output made each
    step of a long chain cost more than the one before)."""
    with session() as s:
        return _outputs(s, workflow_id, step_ids)


def _outputs(s: Session, workflow_id: str, step_ids: Iterable[str] | None) -> dict[str, Any]:
    q = select(WorkflowStep.step_id, WorkflowStep.output).where(WorkflowStep.workflow_id == workflow_id,
                                                                WorkflowStep.status == StepStatus.SUCCEEDED)
    if step_ids is not None:
        wanted = sorted(set(step_ids))
        if not wanted:
            return {}
        q = q.where(WorkflowStep.step_id.in_(wanted))
    return {sid: {"output": out or {}} for sid, out in s.execute(q).all()}


def skip_unfinished(workflow_id: str, reason: str) -> None:
    for st in steps(workflow_id):
        if st["status"] in (StepStatus.PENDING, StepStatus.QUEUED):
            step_skipped(workflow_id, st["step_id"], reason)


# Compensations -----------------------------------------------------------------------------------

def plan_compensations(workflow_id: str, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store the rollback plan once (positions 1..n, newest completion first); an existing plan is kept
    so a retried rollback continues where the last one stopped."""
    with session() as s:
        existing = s.scalars(select(Compensation).where(Compensation.workflow_id == workflow_id)
                             .order_by(Compensation.position)).all()
        if not existing:
            for n, item in enumerate(plan, 1):
                s.add(Compensation(workflow_id=workflow_id, step_id=item["step_id"], position=n,
                                   platform=item["platform"], action=item["action"], status=item["status"],
                                   attempts=0))
            s.flush()
            existing = s.scalars(select(Compensation).where(Compensation.workflow_id == workflow_id)
                                 .order_by(Compensation.position)).all()
        return [_row(c) for c in existing]


def compensation(comp_id: int) -> dict[str, Any]:
    with session() as s:
        return _row(require(s, Compensation, comp_id, "compensation"))


def compensations(workflow_id: str) -> list[dict[str, Any]]:
    with session() as s:
        rows = s.scalars(select(Compensation).where(Compensation.workflow_id == workflow_id)
                         .order_by(Compensation.position)).all()
        return [_row(c) for c in rows]


def compensation_update(comp_id: int, **values: Any) -> None:
    with session() as s:
        s.execute(update(Compensation).where(Compensation.id == comp_id).values(**values))


def compensation_started(comp_id: int, attempt: int) -> None:
    with session() as s:
        s.execute(update(Compensation).where(Compensation.id == comp_id).values(
            status=CompensationStatus.RUNNING, attempts=attempt,
            started_at=func.coalesce(Compensation.started_at, utcnow())))


def reset_failed_compensations(workflow_id: str) -> None:
    with session() as s:
        s.execute(update(Compensation).where(Compensation.workflow_id == workflow_id,
                                             Compensation.status.in_([CompensationStatus.FAILED,
                                                                      CompensationStatus.RUNNING]))
                  .values(status=CompensationStatus.PENDING, error=None))


# Approvals ---------------------------------------------------------------------------------------

def create_approval(workflow_id: str, level: int, step_ids: list[str], details: dict[str, Any],
                    expires_s: float, requested_by: str | None) -> str:
    approval_id = uuid.uuid4().hex[:12]
    now = utcnow()
    with session() as s:
        pending = s.scalar(select(Approval.id).where(Approval.workflow_id == workflow_id, Approval.level == level))
        if pending:  # a redelivered pause message: one approval per gate
            return pending
        s.add(Approval(id=approval_id, workflow_id=workflow_id, step_ids=step_ids, level=level,
                       requested_by=requested_by, details=redact(details), status=ApprovalStatus.PENDING,
                       expires_at=now + timedelta(seconds=expires_s), created_at=now))
    return approval_id


def get_approval(approval_id: str) -> dict[str, Any]:
    with session() as s:
        return _row(require(s, Approval, approval_id, "approval"))


def undecide_approval(approval_id: str) -> None:
    """Back to pending (an approval whose resume could not be sent)."""
    with session() as s:
        s.execute(update(Approval).where(Approval.id == approval_id)
                  .values(status=ApprovalStatus.PENDING, decided_by=None, decided_at=None, comment=None))


def decide_approval(approval_id: str, to: str, actor: str, comment: str | None,
                    audit_as: AuditAs | None = None) -> bool:
    """Decide a pending approval; True if this call did. `audit_as` is recorded in the same transaction,
    and only if it did."""
    with session() as s:
        res = s.execute(update(Approval).where(Approval.id == approval_id,
                                                 Approval.status == ApprovalStatus.PENDING)
                        .values(status=to, decided_by=actor, decided_at=utcnow(), comment=comment))
        won = _rowcount(res) == 1
        if won and audit_as is not None:
            _audit(s, audit_as)
        return won


def add_vote(approval_id: str, actor: str, comment: str | None, audit_as: AuditAs) -> int | None:
    """Record one approver's approval of a pending gate (with its audit entry); the number of distinct approvals
    it has now, or None if this actor had approved it already (or it is decided). Raises OpsqError, recording
    nothing, when the same person approved it already under another name (api_tokens.person_of: a token they
    own, their Slack or CLI name): N approvals are N persons."""
    try:
        with session() as s:
            status = s.scalar(select(Approval.status).where(Approval.id == approval_id).with_for_update())
            if status != ApprovalStatus.PENDING:
                return None
            s.add(ApprovalVote(approval_id=approval_id, actor=actor, comment=comment, at=utcnow()))
            s.flush()
            # Checked after the insert, in its transaction: on PostgreSQL the row lock above orders two votes on
            # one gate, so the second sees the first; on SQLite the insert takes the write lock, which the other
            # vote waits for. Checked before the insert, two names of one person voting at once both passed.
            person = person_of(actor, s)
            for other in s.scalars(select(ApprovalVote.actor).where(ApprovalVote.approval_id == approval_id,
                                                                    ApprovalVote.actor != actor)):
                if person_of(other, s) == person:
                    raise OpsqError(f"{person} has approved approval {approval_id} already (as {other}): it needs "
                                    "distinct approvers")
            _audit(s, audit_as)
            return int(s.scalar(select(func.count()).select_from(ApprovalVote)
                                .where(ApprovalVote.approval_id == approval_id)) or 0)
    except IntegrityError:  # this actor's vote is there already (the key): counted once. No savepoint: SQLite's
        return None         # driver ends the transaction at a savepoint's release, which would commit the vote.


def votes(approval_id: str) -> list[dict[str, Any]]:
    with session() as s:
        return [_row(v) for v in s.scalars(select(ApprovalVote).where(ApprovalVote.approval_id == approval_id)
                                           .order_by(ApprovalVote.at))]


def approvals(*, status: str | None = ApprovalStatus.PENDING, workflow_id: str | None = None) -> list[dict[str, Any]]:
    q = select(Approval).order_by(Approval.created_at)
    if status:
        q = q.where(Approval.status == status)
    if workflow_id:
        q = q.where(Approval.workflow_id == workflow_id)
    with session() as s:
        rows = [_row(a) for a in s.scalars(q)]
        # Who approved so far, for a gate that needs several (approval_votes); empty for the others.
        voted: dict[str, list[str]] = {}
        if rows:
            for v in s.execute(select(ApprovalVote.approval_id, ApprovalVote.actor)
                               .where(ApprovalVote.approval_id.in_([r["id"] for r in rows]))
                               .order_by(ApprovalVote.at)):
                voted.setdefault(v.approval_id, []).append(v.actor)
        return [r | {"approved_by": voted.get(r["id"], [])} for r in rows]


def due_approvals(now: datetime) -> list[dict[str, Any]]:
    with session() as s:
        rows = s.scalars(select(Approval).where(Approval.status == ApprovalStatus.PENDING,
                                              Approval.expires_at <= now)).all()
        return [_row(a) for a in rows]


# Reading -----------------------------------------------------------------------------------------

def events(workflow_id: str) -> list[dict[str, Any]]:
    with session() as s:
        rows = s.scalars(select(WorkflowEvent).where(WorkflowEvent.workflow_id == workflow_id)
                         .order_by(WorkflowEvent.id)).all()
        return [_row(e) for e in rows]


def list_runs(*, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    q = select(WorkflowRun).order_by(WorkflowRun.created_at.desc()).limit(limit)
    if status:
        q = q.where(WorkflowRun.status == status)
    with session() as s:
        return [_row(r) for r in s.scalars(q)]


def whole(workflow_id: str) -> dict[str, Any]:
    """The whole story of one workflow, from the store alone."""
    run = get_run_row(workflow_id)
    return {**run, "steps": steps(workflow_id), "compensations": compensations(workflow_id),
            "approvals": approvals(status=None, workflow_id=workflow_id), "timeline": events(workflow_id)}


def overdue(now: datetime, statuses: Iterable[str]) -> list[str]:
    """Workflows in one of `statuses` whose deadline (expires_at) has passed."""
    with session() as s:
        return list(s.scalars(select(WorkflowRun.id).where(WorkflowRun.expires_at <= now,
                                                           WorkflowRun.status.in_(list(statuses)))))


def due_runs(now: datetime, limit: int = 100) -> list[str]:
    """Scheduled workflows (`pending`, with a `scheduled_for`) whose time has come, the earliest first."""
    with session() as s:
        return list(s.scalars(select(WorkflowRun.id).where(WorkflowRun.status == WorkflowStatus.PENDING,
                                                           WorkflowRun.scheduled_for <= now)
                              .order_by(WorkflowRun.scheduled_for).limit(limit)))
