"""The workflow client API: submit, follow, approve or deny, roll back, mark resolved."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import update

from workers import scheduling, waiting
from workers.client import redis_cause
from workers.errors import EnqueueError, NotAllowed, OpsqError, SubmitError
from workers.guards import keys
from workers.guards.base import RunState
from workers.guards.execution import live_state
from workers.guards.idempotency import claim, release
from workers.observability import tracing
from workers.ops.queue_ops import message_ids_in_flight
from workers.priorities import PRIORITY_NAMES
from workers.queues import CONTROL_QUEUE
from workers.settings import get_settings
from workers.store.api_tokens import person_of
from workers.store.audit import default_actor
from workers.store.db import session
from workers.store.models import utcnow
from workflows import state
from workflows.compiler import compile_segment, plan_segment, send_segment
from workflows.models import WorkflowRun
from workflows.spec import ApprovalPolicy, WorkflowSpec, check, levels
from workflows.status import ApprovalStatus, StepStatus, WorkflowStatus
from workflows.tasks import ROLLBACK_FROM, forget_failed_undos, start_rollback, workflow_rollback
from workflows.view import WorkflowView, workflow_view

SETTLED = (*state.FINAL, WorkflowStatus.AWAITING_APPROVAL)


@dataclass(frozen=True)
class WorkflowHandle:
    id: str
    deduplicated: bool = False

    def status(self) -> str:
        return state.run_status(self.id)

    def state(self) -> dict[str, Any]:
        return state.whole(self.id)

    def wait(self, timeout: float = 120.0, until: tuple[str, ...] = SETTLED) -> WorkflowView:
        """Block until the workflow reaches one of `until` (by default: finished, or waiting for an
        approval) and return it as a WorkflowView (status, error, steps, outputs, pending approvals), as
        ActionHandle.wait() returns an ActionView; TimeoutError if it takes longer. Each status change is
        published (workflows.state.transition) and wakes this at once (workers.waiting), with a bounded fallback
        poll; only the status is read until then, the whole view once at the end. The view's status is one of
        `until`: the view is a read of its own, and should the workflow move on between the two (an approval
        that comes just then), the wait goes on, within the same timeout and subscription."""

        def read(_note: str | None) -> str | WorkflowView:
            status = self.status()
            return workflow_view(self.id) if status in until else status

        def done(seen: str | WorkflowView) -> bool:
            return isinstance(seen, WorkflowView) and seen.status in until

        def timed_out(seen: str | WorkflowView) -> str:
            return f"workflow {self.id} still {getattr(seen, 'status', seen)} after {timeout:g}s"

        view = waiting.wait_until(keys.workflow_channel(self.id), read, done, timeout, timed_out)
        assert isinstance(view, WorkflowView)  # done() says so
        return view


def submit_workflow(spec_or_path: str | Path | Mapping[str, Any] | WorkflowSpec, input: Mapping[str, Any] | None = None,
                    priority: str | None = None, idempotency_key: str | None = None,
                    created_by: str | None = None, expires_in: float | None = None, countdown: float | None = None,
                    eta: datetime | None = None) -> WorkflowHandle:
    """Validate the whole spec (every error at once), record the workflow and its steps, and send the
    first part of its canvas. Invalid specs raise WorkflowInvalid and nothing is stored or queued.
    `countdown` (seconds) or `eta` (an aware datetime): start it then; it is `pending` until the beat leader
    starts it (release_due). `expires_in` (seconds from its start): its deadline; still unfinished then, it is
    cancelled with rollback (beat)."""
    spec = check(spec_or_path, input)
    due, deadline = scheduling.when(countdown=countdown, eta=eta, expires_in=expires_in)
    prio = priority or spec.priority
    if prio not in PRIORITY_NAMES:
        raise SubmitError(f"unknown priority {prio!r} (use one of: {', '.join(PRIORITY_NAMES)})")
    input_ = {**spec.input, **(input or {})}
    settings = get_settings()
    workflow_id = uuid.uuid4().hex
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= 190:
            raise SubmitError("idempotency_key must be 1 to 190 characters")
        first = claim(f"wf:{idempotency_key}", workflow_id, settings.idempotency_ttl_s)
        if first is not None:
            return WorkflowHandle(first, deduplicated=True)
    if due is not None:
        try:
            state.create_run(spec, input_, prio, workflow_id=workflow_id, idempotency_key=idempotency_key,
                             created_by=created_by or default_actor(), scheduled_for=due, expires_at=deadline)
        except Exception:
            if idempotency_key is not None:
                release(f"wf:{idempotency_key}", workflow_id)
            raise
        return WorkflowHandle(workflow_id)
    # One trace per workflow (OPSQ_TRACING): its steps and compensations are sent from within this span's context.
    with tracing.span("opsq.workflow.submit", {"opsq.workflow": spec.name, "opsq.workflow_id": workflow_id}):
        try:
            # The first segment is planned before anything is written, so the run, its steps, the segment's action
            # records and the audit entry go in one transaction; then its canvas is sent.
            max_attempts = settings.max_attempts
            plan = plan_segment(spec, from_level=0, approved=False, max_levels=settings.workflow_segment_levels)
            action_ids = state.start_run(spec, input_, prio, workflow_id=workflow_id, idempotency_key=idempotency_key,
                                         created_by=created_by or default_actor(), queued=plan.step_ids,
                                         max_attempts=max_attempts, expires_at=deadline)
            try:
                compile_segment(workflow_id, plan, spec, action_ids, priority=prio,
                                max_attempts=max_attempts).apply_async()
            except Exception as exc:
                if not isinstance(exc, (redis.RedisError, KombuOperationalError)):
                    state.delete_run(workflow_id, f"not enqueued: {' '.join(str(exc).split())[:300]}")
                    raise
                cause = redis_cause(exc)
                state.delete_run(workflow_id, f"the broker refused the message: {cause}")
                raise EnqueueError(f"could not enqueue the workflow: {cause}; nothing was queued or kept") from exc
        except Exception:
            if idempotency_key is not None:
                release(f"wf:{idempotency_key}", workflow_id)
            raise
    return WorkflowHandle(workflow_id)


def launch(workflow_id: str, spec: WorkflowSpec, *, from_level: int, approved: bool,
           done: frozenset[str] = frozenset()) -> list[str]:
    """Send the next part of the workflow's canvas: from `from_level` up to the next approval gate,
    leaving out the steps in `done`."""
    run = state.get_run_row(workflow_id)
    return send_segment(workflow_id, spec, from_level=from_level, approved=approved, priority=run["priority"],
                        max_attempts=get_settings().max_attempts, done=done)


def resume(workflow_id: str, actor: str | None = None, *, only_if_idle: bool = False) -> str:
    """Send the rest of a running workflow again, from the first level with a step not yet succeeded:
    for a workflow whose messages were lost (a broker restart, a purge). Steps that succeeded are not
    sent again; a step whose outcome is in Redis is answered from it without a second call.
    `only_if_idle`: do nothing while any of its steps has a message or a live lease (beat uses this)."""

    run = state.get_run_row(workflow_id)
    if run["status"] != WorkflowStatus.RUNNING:
        raise OpsqError(f"workflow {workflow_id} is {run['status']}; only a running workflow can be resumed "
                        "(awaiting_approval: approve or deny it; failed rollbacks: opsq workflow rollback; "
                        "failed: opsq workflow retry --from-failed-step)")
    steps = state.steps(workflow_id)
    busy = _busy(steps)
    if busy:
        if only_if_idle:
            return f"not resumed: step(s) {', '.join(busy)} still have a message or a running worker"
        raise OpsqError(f"step(s) {', '.join(busy)} still have a message or a running worker; nothing is lost")
    first, sent = _send_the_rest(workflow_id, run, steps)
    # Recorded once sent: a resume the broker refused did not happen.
    state.record(workflow_id, "resumed", detail=f"from level {first} by {actor or default_actor()}",
                 audit_as=("workflow_resume", f"workflow:{workflow_id}", {"from_level": first}, actor))
    return f"resumed from level {first}: sent {', '.join(sent) or 'the final bookkeeping'}"


def _busy(steps: list[dict[str, Any]]) -> list[str]:
    """The steps with a message in Redis (queued, or held unacknowledged by a worker) or a live lease: sending
    them again would run them twice."""
    in_flight, too_long = message_ids_in_flight()
    return [s["step_id"] for s in steps
            if s["action_id"] in in_flight or s["platform"] in too_long
            or (s["status"] == StepStatus.RUNNING
                and (live_state(s["action_id"]) or {}).get("state") == RunState.RUNNING)]


def _first_unfinished(spec: WorkflowSpec, done: frozenset[str]) -> int:
    layers = levels(spec)
    return next((n for n, level in enumerate(layers) if any(sid not in done for sid in level)), len(layers))


def _send_the_rest(workflow_id: str, run: dict[str, Any], steps: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Resume's and retry's send: from the first level with a step not succeeded, leaving the succeeded ones
    out (their outputs are in the store, where the templates of the steps after them read them). A gate at
    that level approved already is not asked again. Returns (that level, the steps sent)."""
    spec = WorkflowSpec.model_validate(run["spec"])
    done = frozenset(s["step_id"] for s in steps if s["status"] == StepStatus.SUCCEEDED)
    first = _first_unfinished(spec, done)
    approved = any(a["level"] == first and a["status"] == ApprovalStatus.APPROVED
                   for a in state.approvals(status=None, workflow_id=workflow_id))
    return first, launch(workflow_id, spec, from_level=first, approved=approved, done=done)


@dataclass(frozen=True)
class RetryPlan:
    """What `retry` would do to a failed workflow: the steps it runs again (every one not succeeded: the failed
    step, and those the failure kept from running), from which level, and the succeeded ones it keeps."""

    workflow_id: str
    failed_step: str | None
    from_level: int
    rerun: list[str]
    kept: list[str]


def plan_retry(workflow_id: str) -> RetryPlan:
    """The retry of a `failed` workflow, checked but not done (what `--dry-run` shows). Refuses any other
    status, and while a step of the workflow still has a message or a running worker."""
    run = state.get_run_row(workflow_id)
    if run["status"] != WorkflowStatus.FAILED:
        raise OpsqError(f"workflow {workflow_id} is {run['status']}; only a failed workflow is retried from its "
                        f"failed step{_retry_hint(run['status'])}")
    steps = state.steps(workflow_id)
    busy = _busy(steps)
    if busy:
        raise OpsqError(f"step(s) {', '.join(busy)} of workflow {workflow_id} still have a message or a running "
                        "worker; retry once they are done")
    spec = WorkflowSpec.model_validate(run["spec"])
    kept = [s["step_id"] for s in steps if s["status"] == StepStatus.SUCCEEDED]
    return RetryPlan(workflow_id, run["failed_step"], _first_unfinished(spec, frozenset(kept)),
                     [s["step_id"] for s in steps if s["status"] != StepStatus.SUCCEEDED], kept)


def _retry_hint(status: str) -> str:
    hints: dict[str, str] = {
        WorkflowStatus.ROLLED_BACK: ": what it completed was undone, so there is nothing to continue; run it "
                                    "again (opsq workflow run). A spec with `on_failure: stop` keeps what "
                                    "completed when a step fails, for a retry",
        WorkflowStatus.ROLLBACK_FAILED: " (its rollback failed: opsq workflow rollback retries the rollback)",
        WorkflowStatus.RUNNING: " (a running workflow whose messages were lost: opsq workflow resume)",
    }
    return hints.get(status, "")


def retry(workflow_id: str, actor: str | None = None) -> str:
    """Run a `failed` workflow (`on_failure: stop`) again from its failed step: every step not succeeded runs
    again, each as a new action (the failed one's record stays, as it ended); the succeeded steps are not run
    again, and their outputs are what the steps after them read. Once: of two retries at once, one wins."""
    plan = plan_retry(workflow_id)
    who = actor or default_actor()
    detail = f"from step {plan.failed_step or '?'} (level {plan.from_level}) by {who}: runs again " \
             f"{', '.join(plan.rerun)}" + (f"; keeps {', '.join(plan.kept)}" if plan.kept else "")
    renewed = state.retry_failed(workflow_id, plan.rerun, detail=detail, audit_as=(
        "workflow_retry", f"workflow:{workflow_id}",
        {"failed_step": plan.failed_step, "from_level": plan.from_level, "rerun": plan.rerun}, who))
    if renewed is None:
        raise OpsqError(f"workflow {workflow_id} changed state meanwhile (retried by someone else?); check "
                        "`opsq workflow status`")
    try:
        first, sent = _send_the_rest(workflow_id, state.get_run_row(workflow_id), state.steps(workflow_id))
    except Exception as exc:
        # Nothing was sent: failed again, so the retry can be made again once the broker is back; the trail says
        # the retry was withdrawn, and why (its entry is chained already), as approve's does.
        why = " ".join(str(exc).split())[:300]
        state.transition(workflow_id, WorkflowStatus.FAILED, allowed_from=(WorkflowStatus.RUNNING,),
                         error=f"retry not sent: {why}", failed_step=plan.failed_step, event="retry_failed",
                         audit_as=("workflow_retry_withdrawn", f"workflow:{workflow_id}", {"reason": why}, who))
        raise
    return f"retrying from level {first}: sent {', '.join(sent) or 'the final bookkeeping'}" + \
        (f"; kept {', '.join(plan.kept)} (not run again)" if plan.kept else "")


def resume_stuck(older_than_s: float) -> list[str]:
    """Beat's part of detect_stuck: running workflows with no progress for `older_than_s` and nothing in
    flight are resumed."""

    cutoff = utcnow() - timedelta(seconds=older_than_s)
    out = []
    for run in state.list_runs(status=WorkflowStatus.RUNNING, limit=500):
        if run["updated_at"] < cutoff:
            result = resume(run["id"], "opsqueue-beat", only_if_idle=True)
            if result.startswith("resumed"):
                out.append(run["id"])
    return out


def gate_policy(approval: Mapping[str, Any], spec: WorkflowSpec) -> ApprovalPolicy:
    """The policy of the gate this approval is for. A gated step without `approval:` has the default policy
    (anyone may decide, one approval, the submitter may not approve); with several gated steps, the strictest of
    theirs (every approver list must admit the actor, the largest `required`, self-approval only if all allow it)."""
    policies = [spec.step(sid).approval or ApprovalPolicy() for sid in approval["step_ids"]]
    if len(policies) == 1:
        return policies[0]
    named = [p.approvers for p in policies if p.approvers]
    common = sorted(set.intersection(*map(set, named))) if named else []
    return ApprovalPolicy(approvers=common if named else [], required=max(p.required for p in policies),
                          allow_self_approval=all(p.allow_self_approval for p in policies))


def _is_approver(actor: str, approvers: list[str]) -> bool:
    groups = get_settings().approver_groups
    return any(actor == a or (a.startswith("group:") and actor in groups.get(a.removeprefix("group:"), []))
               for a in approvers)


def check_decider(approval: Mapping[str, Any], actor: str, *, approving: bool) -> ApprovalPolicy:
    """Refuse (NotAllowed) an actor the gate's policy does not admit; returns the policy. Every gate has one
    (gate_policy): by default its submitter may deny it but not approve it, so a gate is a second person's
    look, not a step one person clicks through."""
    run = state.get_run_row(approval["workflow_id"])
    policy = gate_policy(approval, WorkflowSpec.model_validate(run["spec"]))
    if policy.approvers and not _is_approver(actor, policy.approvers):
        raise NotAllowed(f"{actor} is not an approver of approval {approval['id']} (approvers: "
                         f"{', '.join(policy.approvers)})")
    # Persons, not actor names: a token acts for its owner (api_tokens.person_of), so submitting as `api:dana-bot`
    # and approving as `dana` in Slack (or the reverse) is one person approving their own workflow. Enforced for the
    # identities something authenticated (API tokens, Slack users); a CLI `--actor` is the caller's own say (who
    # has the CLI has the store's credentials), so there the rule is advisory.
    submitter = run["created_by"]
    if not approving or policy.allow_self_approval or not submitter:
        return policy
    person = person_of(actor)
    if person == person_of(submitter):
        submitted = f"submitted workflow {approval['workflow_id']}" + ("" if submitter == person else
                                                                         f" (as {submitter})")
        who = f"{actor} {submitted}" if actor == person else f"{actor} acts for {person}, who {submitted},"
        raise NotAllowed(f"{who} and may not approve it "
                         "(allow_self_approval: false); another person must approve it (a spec's gate may allow "
                         "it: approval: {allow_self_approval: true})")
    return policy


def approve(approval_id: str, actor: str | None = None, comment: str | None = None) -> WorkflowHandle:
    """Resume the workflow from the gated steps: the rest of its canvas is compiled from the stored spec,
    so this works however long after, and whichever workers are running now. Under a policy needing several
    approvers (`required: N`), each approval but the Nth is recorded and the workflow keeps waiting
    (`approval_progress` says how far it is)."""
    approval = state.get_approval(approval_id)
    wid = approval["workflow_id"]
    status = state.get_run_row(wid)["status"]
    if status != WorkflowStatus.AWAITING_APPROVAL and approval["status"] == ApprovalStatus.PENDING:
        raise OpsqError(f"workflow {wid} is {status}, not awaiting approval; the approval cannot be used")
    who = actor or default_actor()
    policy = check_decider(approval, who, approving=True)
    if policy.required > 1:
        _check_open(approval)
        count = state.add_vote(approval_id, who, comment, audit_as=(
            "approve_vote", f"approval:{approval_id}", {"workflow_id": wid, "comment": comment,
                                                        "required": policy.required}, who))
        if count is None:
            current = state.get_approval(approval_id)
            if current["status"] != ApprovalStatus.PENDING:
                raise OpsqError(f"approval {approval_id} is already {current['status']}")
            raise OpsqError(f"{who} has approved approval {approval_id} already: it needs {policy.required} "
                            f"distinct approvers ({len(state.votes(approval_id))} so far)")
        if count < policy.required:
            return WorkflowHandle(wid)
        if state.get_approval(approval_id)["status"] == ApprovalStatus.APPROVED:
            return WorkflowHandle(wid)  # two last approvals at once: the other one resumed it
        comment = (f"approved by {', '.join(v['actor'] for v in state.votes(approval_id))} "
                   f"({count} of {policy.required})" + (f": {comment}" if comment else ""))
    _decide(approval, ApprovalStatus.APPROVED, actor, comment)
    detail = f"approval {approval_id} by {actor or default_actor()}" + (f": {comment}" if comment else "")
    if not state.transition(wid, WorkflowStatus.RUNNING, allowed_from=(WorkflowStatus.AWAITING_APPROVAL,),
                            event="approved", detail=detail,
                            audit_as=("approve", f"approval:{approval_id}", {"workflow_id": wid, "comment": comment},
                                      actor)):
        state.undecide_approval(approval_id)
        raise OpsqError(f"workflow {wid} is {state.get_run_row(wid)['status']}, not awaiting approval")
    spec = WorkflowSpec.model_validate(state.get_run_row(wid)["spec"])
    try:
        launch(wid, spec, from_level=approval["level"], approved=True)
    except Exception as exc:
        # Nothing was sent: put the workflow back where it waited, so the approval can be given again; the
        # trail says the approval was withdrawn, and why.
        state.transition(wid, WorkflowStatus.AWAITING_APPROVAL, allowed_from=(WorkflowStatus.RUNNING,),
                         event="approve_failed",
                         audit_as=("approve_withdrawn", f"approval:{approval_id}",
                                   {"workflow_id": wid, "reason": " ".join(str(exc).split())[:300]}, actor))
        state.undecide_approval(approval_id)
        raise
    return WorkflowHandle(wid)


def approval_progress(approval_id: str) -> tuple[str, int, int]:
    """(status, distinct approvals so far, approvals required) of one approval."""
    approval = state.get_approval(approval_id)
    policy = gate_policy(approval, WorkflowSpec.model_validate(state.run_spec(approval["workflow_id"])))
    return approval["status"], len(state.votes(approval_id)), policy.required


def deny(approval_id: str, reason: str, actor: str | None = None) -> WorkflowHandle:
    approval = state.get_approval(approval_id)
    check_decider(approval, actor or default_actor(), approving=False)
    _decide(approval, ApprovalStatus.DENIED, actor, reason,
            audit_as=("deny", f"approval:{approval_id}", {"workflow_id": approval["workflow_id"], "reason": reason},
                      actor))
    start_rollback(approval["workflow_id"], f"approval {approval_id} denied by {actor or default_actor()}: {reason}")
    return WorkflowHandle(approval["workflow_id"])


def expire_due() -> list[str]:
    """Expired approvals roll their workflows back (beat runs this every minute). Returns their ids."""

    expired = []
    for approval in state.due_approvals(utcnow()):
        if state.decide_approval(approval["id"], ApprovalStatus.EXPIRED, "opsqueue", "approval expired",
                                 audit_as=("approval_expired", f"approval:{approval['id']}",
                                           {"workflow_id": approval["workflow_id"]}, "opsqueue")):
            start_rollback(approval["workflow_id"], f"approval {approval['id']} expired")
            expired.append(approval["id"])
    return expired


#: What a cancel stops: a workflow still on its way. One already rolling back is left to its rollback.
CANCELLABLE = (WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.AWAITING_APPROVAL)


def cancel_workflow(workflow_id: str, *, actor: str | None = None, rollback: bool = True,
                    why: str | None = None) -> str:
    """Cancel a workflow: no step not yet started will start (each checks its workflow's status when its
    message arrives), pending approvals are denied, and, unless `rollback` is False, the steps that completed
    are compensated, newest first; a step calling its platform at that moment finishes its call and is
    compensated too (the rollback waits for it). Ends `cancelled` (`cancelling` meanwhile). Recorded in the
    store before anything else, so it holds with every worker stopped. Returns what was done."""
    run = state.get_run_row(workflow_id)
    who = actor or default_actor()
    if run["status"] in (*state.FINAL, WorkflowStatus.CANCELLING, WorkflowStatus.ROLLING_BACK):
        return f"already {run['status']}: nothing to cancel"
    if run["status"] == WorkflowStatus.PENDING:
        rollback = False  # scheduled, not started: nothing ran, nothing to undo
    reason = f"cancelled by {who}" + (f": {why}" if why else "")
    entry: state.AuditAs = ("workflow_cancel", f"workflow:{workflow_id}",
                            {"rollback": rollback, "why": why, "was": run["status"]}, who)
    to = WorkflowStatus.CANCELLING if rollback else WorkflowStatus.CANCELLED
    if not state.transition(workflow_id, to, allowed_from=CANCELLABLE, error=reason, event="cancelled",
                            detail=reason + ("" if rollback else " (no rollback)"), audit_as=entry):
        now = state.run_status(workflow_id)
        return f"it became {now} meanwhile: nothing to cancel"
    for approval in state.approvals(workflow_id=workflow_id):
        state.decide_approval(approval["id"], ApprovalStatus.DENIED, who, "workflow cancelled")
    if not rollback:
        state.skip_unfinished(workflow_id, "workflow cancelled")
        return "cancelled; the steps that completed are left as they are (no rollback)"
    workflow_rollback.apply_async(args=[workflow_id], queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)
    return "cancelling: the steps that completed are being compensated, newest first"


def release_due() -> list[str]:
    """Start the scheduled workflows whose time has come (the beat leader, every tick): each once, however many
    beats look (the conditional `pending` -> `running` transition decides who starts it). One past its deadline
    when due is cancelled instead. A start whose send fails leaves it running with its first steps queued and no
    message: beat's resume_stuck sends them (as for any workflow whose messages were lost)."""
    started = []
    now = utcnow()
    for workflow_id in state.due_runs(now):
        run = state.get_run_row(workflow_id)
        if run["expires_at"] is not None and run["expires_at"] <= now:
            cancel_workflow(workflow_id, actor="opsqueue-deadline", rollback=False,
                            why="its deadline passed before it was due to start")
            continue
        if not state.transition(workflow_id, WorkflowStatus.RUNNING, allowed_from=(WorkflowStatus.PENDING,),
                                event="started", detail="scheduled start"):
            continue  # another beat started it, or it was cancelled meanwhile
        spec = WorkflowSpec.model_validate(state.run_spec(workflow_id))
        try:
            launch(workflow_id, spec, from_level=0, approved=False)
        except Exception as exc:
            state.record(workflow_id, "start_failed", detail=f"{' '.join(str(exc).split())[:300]}; resume_stuck "
                                                             "sends it again")
            continue
        started.append(workflow_id)
    return started


def expire_overdue() -> list[str]:
    """Workflows past their deadline (submit_workflow's expires_in) are cancelled with rollback (beat runs this
    every minute). Returns their ids."""
    done = []
    for workflow_id in state.overdue(utcnow(), CANCELLABLE):
        note = cancel_workflow(workflow_id, actor="opsqueue-deadline", why="its deadline passed")
        if not note.startswith(("already", "it became")):
            done.append(workflow_id)
    return done


def _check_open(approval: Mapping[str, Any]) -> None:
    if approval["expires_at"] <= utcnow() and approval["status"] == ApprovalStatus.PENDING:
        expire_due()
        raise OpsqError(f"approval {approval['id']} expired at {approval['expires_at']:%Y-%m-%d %H:%M:%S} UTC; "
                        "its workflow is rolled back")
    if approval["status"] != ApprovalStatus.PENDING:
        raise OpsqError(f"approval {approval['id']} is already {approval['status']}")


def _decide(approval: dict[str, Any], to: str, actor: str | None, comment: str | None,
            audit_as: state.AuditAs | None = None) -> None:
    if approval["expires_at"] <= utcnow() and approval["status"] == ApprovalStatus.PENDING:
        expire_due()
        raise OpsqError(f"approval {approval['id']} expired at {approval['expires_at']:%Y-%m-%d %H:%M:%S} UTC; "
                        "its workflow is rolled back")
    if not state.decide_approval(approval["id"], to, actor or default_actor(), comment, audit_as):
        current = state.get_approval(approval["id"])["status"]
        raise OpsqError(f"approval {approval['id']} is already {current}")


def rollback(workflow_id: str, actor: str | None = None) -> str:
    """Roll back now, or retry a rollback that failed (only compensations not yet done run again)."""

    run = state.get_run_row(workflow_id)
    who = actor or default_actor()
    # Recorded with the state change it makes, in its transaction: a refused rollback (a workflow that
    # succeeded, or changed meanwhile) leaves no `workflow_rollback` entry.
    entry: state.AuditAs = ("workflow_rollback", f"workflow:{workflow_id}", {"status": run["status"]}, who)
    changed = OpsqError(f"workflow {workflow_id} changed state meanwhile; check `opsq workflow status`")
    if run["status"] == WorkflowStatus.ROLLBACK_FAILED:
        forget_failed_undos(workflow_id)
        state.reset_failed_compensations(workflow_id)
        if not state.transition(workflow_id, WorkflowStatus.ROLLING_BACK,
                                allowed_from=(WorkflowStatus.ROLLBACK_FAILED,), event="rollback_retried",
                                detail=f"by {who}", audit_as=entry):
            raise changed

        workflow_rollback.apply_async(args=[workflow_id], queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)
        return "retrying the compensations that did not finish"
    if run["status"] in (WorkflowStatus.ROLLING_BACK, WorkflowStatus.CANCELLING):
        # Its rollback task was lost or is slow: send it again. It continues from the stored plan, and
        # a compensation already done (or running) is not done twice. Recorded once it was sent.

        workflow_rollback.apply_async(args=[workflow_id], queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)
        state.record(workflow_id, "rollback_resent", detail=f"by {who}", audit_as=entry)
        return "rollback sent again (it continues from its plan)"
    if run["status"] in ROLLBACK_FROM:
        if run["status"] == WorkflowStatus.AWAITING_APPROVAL:
            for a in state.approvals(workflow_id=workflow_id):
                state.decide_approval(a["id"], ApprovalStatus.DENIED, who, "workflow rolled back by hand")
        # start_rollback's transition, with the entry in its transaction.
        reason = f"rolled back by hand by {who}"
        if not state.transition(workflow_id, WorkflowStatus.ROLLING_BACK, allowed_from=ROLLBACK_FROM, error=reason,
                                event="rollback_started", detail=reason, audit_as=entry):
            raise changed
        workflow_rollback.apply_async(args=[workflow_id], queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)
        return "rollback started"
    raise OpsqError(f"workflow {workflow_id} is {run['status']}: nothing to roll back")


def mark_resolved(workflow_id: str, note: str, actor: str | None = None) -> None:
    """A person fixed it by hand; recorded with who and why."""
    if not note.strip():
        raise SubmitError("a note saying what was done is required")
    who = actor or default_actor()
    # Recorded with the transition (the change), in its transaction: a refused one records nothing.
    if not state.transition(workflow_id, WorkflowStatus.RESOLVED,
                            allowed_from=(WorkflowStatus.ROLLBACK_FAILED, WorkflowStatus.FAILED,
                                          WorkflowStatus.ROLLING_BACK, WorkflowStatus.AWAITING_APPROVAL,
                                          WorkflowStatus.RUNNING),
                            event="resolved", detail=f"by {who}: {note}",
                            audit_as=("mark_resolved", f"workflow:{workflow_id}", {"note": note}, who)):
        raise OpsqError(f"workflow {workflow_id} is {state.get_run_row(workflow_id)['status']}; it is finished "
                        "already and cannot be marked resolved")
    for approval in state.approvals(workflow_id=workflow_id):
        state.decide_approval(approval["id"], ApprovalStatus.DENIED, who, "workflow marked resolved by hand")
    state.skip_unfinished(workflow_id, "workflow marked resolved by hand")
    with session() as s:
        s.execute(update(WorkflowRun).where(WorkflowRun.id == workflow_id).values(resolution_note=f"{who}: {note}"))

