"""The workflow bookkeeping tasks (control queue), the rollback, and the step hooks for execute_action."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NoReturn

from celery import Task, chain
from celery.exceptions import ChordError

from executors.base import Effect
from executors.errors import ExecutorError
from workers import outages, step_hooks
from workers.attempt import Ending, run_attempt
from workers.celery_app import app
from workers.client import submit_action
from workers.errors import ActionFailed
from workers.executor_pool import executor
from workers.guards import Attempt, keys
from workers.guards.connection import guard_redis
from workers.observability import sentry
from workers.queues import CONTROL_QUEUE
from workers.redaction import contains_redacted
from workers.settings import get_settings
from workers.status import ErrorKind
from workers.store.models import utcnow
from workflows import state, templates
from workflows.spec import CompensationSpec, WorkflowSpec, levels
from workflows.status import ApprovalStatus, CompensationStatus, StepStatus, WorkflowStatus

log = logging.getLogger("opsq.workflow")

RUNNABLE = (WorkflowStatus.RUNNING,)
ROLLBACK_FROM = (WorkflowStatus.RUNNING, WorkflowStatus.AWAITING_APPROVAL, WorkflowStatus.FAILED)


class SpecCache:
    """Parsed specs, the least recently used dropped first, bounded by their size as stored (JSON) as well as
    by their number: a parsed spec takes about ten times its JSON, and one may be OPSQ_MAX_SPEC_BYTES (1 MiB),
    so a count alone would let a worker hold hundreds of MB. A spec larger than the whole budget is parsed
    each time, as before. Callers must not change the spec they get (none does)."""

    def __init__(self, max_bytes: int = 4 << 20, max_items: int = 64) -> None:
        self.max_bytes, self.max_items = max_bytes, max_items
        self._items: OrderedDict[Hashable, tuple[WorkflowSpec, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # a worker may run tasks in threads (-P threads)

    def get(self, key: Hashable, load: Callable[[], dict[str, Any]]) -> WorkflowSpec:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        raw = load()
        spec = WorkflowSpec.model_validate(raw)
        size = len(json.dumps(raw, separators=(",", ":"), default=str))
        if size <= self.max_bytes:
            with self._lock:
                if key not in self._items:
                    self._items[key] = (spec, size)
                    self._bytes += size
                while self._bytes > self.max_bytes or len(self._items) > self.max_items:
                    self._bytes -= self._items.popitem(last=False)[1][1]
        return spec

    def __len__(self) -> int:
        return len(self._items)


_specs = SpecCache()


def spec_of(workflow_id: str) -> tuple[WorkflowSpec, dict[str, Any]]:
    """The workflow's spec and its run's row (without the spec: state.run_head). Every step's bookkeeping
    asks for it, and a spec grows with the workflow: it is read and parsed once per process and workflow.
    A spec never changes after submit, so a parsed one stays right for as long as its run exists; the key has
    the submit time too, since a workflow id seen again with another spec (a database restored from another
    store's backup, test databases in one process) is another run."""
    run = state.run_head(workflow_id)
    return _specs.get((workflow_id, run["created_at"]), lambda: state.run_spec(workflow_id)), run


def context_for(workflow_id: str, spec: WorkflowSpec, run: dict[str, Any], params: Any) -> dict[str, Any]:
    """What `params`' templates can read: the input, and the outputs of the steps they name (not every
    earlier output: a step of a long chain reads one row, not all the rows before it)."""
    return {"input": {**spec.input, **run["input"]},
            "steps": state.outputs(workflow_id, templates.steps_referenced(params)), "settings": _settings()}


def _settings() -> dict[str, str]:
    settings = get_settings()
    return templates.settings_context(settings.base_url, settings.platform_base_url)


class WorkflowStepHooks:
    """How execute_action reports the steps it runs (registered below, when the worker loads this)."""

    def begin(self, step: dict[str, Any], params: dict[str, Any], attempt: int) -> dict[str, Any] | None:
        """The params to run with, the step claimed (one transaction: state.begin_step); None: it must not run."""
        wid, sid = step["workflow_id"], step["step_id"]
        run, outputs, claimed = state.begin_step(wid, sid, attempt, templates.steps_referenced(params),
                                                 action_id=step.get("action_id"))
        if run["status"] not in RUNNABLE:
            state.step_skipped(wid, sid, f"workflow is {run['status']}")
            return None
        if not claimed:
            return None
        spec = _specs.get((wid, run["created_at"]), lambda: state.run_spec(wid))
        return _rendered(params, {"input": {**spec.input, **run["input"]}, "steps": outputs, "settings": _settings()})

    def succeeded(self, step: dict[str, Any], params: dict[str, Any], result: dict[str, Any],
                  action_row: dict[str, Any] | None = None) -> None:
        # `last_level` comes with the message (workflows.compiler): no read of the spec to know it.
        state.step_succeeded(step["workflow_id"], step["step_id"], params, result, action_row=action_row,
                             last_level=bool(step.get("last_level")))

    def failed(self, step: dict[str, Any], kind: str, message: str) -> None:
        state.step_failed(step["workflow_id"], step["step_id"], f"[{kind}] {message}")


def _rendered(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = templates.render(params, context)
    if contains_redacted(rendered):
        raise templates.TemplateError("a template rendered a stored secret ('[redacted]'); secrets cannot "
                                      "flow through workflow templates")
    return rendered


step_hooks.register(WorkflowStepHooks())


def start_rollback(workflow_id: str, reason: str, failed_step: str | None = None) -> bool:
    """Starts the rollback once, however many errbacks (or operators) ask for it."""
    if not state.transition(workflow_id, WorkflowStatus.ROLLING_BACK, allowed_from=ROLLBACK_FROM, error=reason,
                            failed_step=failed_step, event="rollback_started", detail=reason):
        return False
    workflow_rollback.apply_async(args=[workflow_id], queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE)
    return True


@app.task(name="opsq.workflow.step_failed")
def workflow_step_failed(request: Any, exc: Any, traceback: Any, workflow_id: str, step_id: str) -> None:
    """link_error of every step. Celery calls it in the failing worker with the failed request; a chord
    can fire it more than once, which start_rollback absorbs."""
    if isinstance(exc, ChordError):
        # The body of a chord whose header failed: this step never ran, its upstream failed. Name the
        # step that did fail (its own errback may lose the race to start the rollback).
        state.step_skipped(workflow_id, step_id, "an upstream step failed")
        match = re.search(r"Dependency ([0-9a-f]{32})", str(exc))
        failed = state.step_for_action(match.group(1)) if match else None
        if failed:
            step_failed_for_good(workflow_id, f"step {failed['step_id']} failed: {failed['error'] or exc}",
                                 failed_step=failed["step_id"])
        else:
            step_failed_for_good(workflow_id, f"upstream of step {step_id} failed: {exc}")
        return
    log.warning("workflow %s: step %s failed for good (%s)", workflow_id, step_id, exc)
    state.step_failed(workflow_id, step_id, str(exc))
    step_failed_for_good(workflow_id, f"step {step_id} failed: {exc}", failed_step=step_id)


def step_failed_for_good(workflow_id: str, reason: str, failed_step: str | None = None) -> bool:
    """What the spec's `on_failure` says: roll back (start_rollback), or stop: the workflow ends `failed` with
    what completed kept, for `opsq workflow retry --from-failed-step` (workflows.client.retry) or a rollback by
    hand. Once, however many errbacks ask (a conditional transition, as start_rollback's)."""
    spec, _ = spec_of(workflow_id)
    if spec.on_failure != "stop":
        return start_rollback(workflow_id, reason, failed_step=failed_step)
    # Steps not started will not start (a message already sent finds the workflow not running, and skips). Skipped
    # before the status changes, so whoever is woken by `failed` reads the steps as they stay (found by CI: a
    # waiter read `queued`). If the transition then loses (a cancel or a rollback came first), skipping was
    # what those do too.
    state.skip_unfinished(workflow_id, "its workflow failed; a retry runs it")
    if not state.transition(workflow_id, WorkflowStatus.FAILED, allowed_from=(WorkflowStatus.RUNNING,), error=reason,
                            failed_step=failed_step, event="failed", detail=reason):
        return False
    log.warning("workflow %s failed (on_failure: stop): %s; completed steps kept", workflow_id, reason)
    return True


@app.task(name="opsq.workflow.pause", acks_late=True)
def workflow_pause(workflow_id: str, level: int) -> str | None:
    spec, run = spec_of(workflow_id)
    if run["status"] != WorkflowStatus.RUNNING:  # rolled back or resolved meanwhile: no approval for a dead workflow
        return None
    asked = [a for a in state.approvals(status=None, workflow_id=workflow_id) if a["level"] == level]
    if asked:
        # A redelivered pause (its worker was stopped after the pause, before the ack): the approval was asked for
        # already. Given, the workflow runs on, and pausing it again would hold it for good; still pending, the
        # first pause may have stopped before the workflow waited for it, and that is finished here.
        approval = asked[0]
        if approval["status"] == ApprovalStatus.PENDING:
            state.transition(workflow_id, WorkflowStatus.AWAITING_APPROVAL, allowed_from=(WorkflowStatus.RUNNING,),
                             event="awaiting_approval",
                             detail=f"approval {approval['id']} for step(s) {', '.join(approval['step_ids'])}")
        return str(approval["id"])
    gated = [s for s in levels(spec)[level] if spec.step(s).requires_approval]
    context = context_for(workflow_id, spec, run, [spec.step(s).params for s in gated])
    details = {}
    for s in gated:
        try:  # show the approver what will really be sent
            params = templates.render(spec.step(s).params, context)
        except templates.TemplateError:
            params = spec.step(s).params
        details[s] = {"platform": spec.step(s).platform, "action": spec.step(s).action, "params": params}
    approval_id = state.create_approval(workflow_id, level, gated, details, spec.approval_expires_s,
                                        run["created_by"])
    state.set_resume_level(workflow_id, level)
    if state.transition(workflow_id, WorkflowStatus.AWAITING_APPROVAL, allowed_from=(WorkflowStatus.RUNNING,),
                        event="awaiting_approval", detail=f"approval {approval_id} for step(s) {', '.join(gated)}"):
        log.info("workflow %s waits for approval %s", workflow_id, approval_id)
        _ask_in_slack(workflow_id, spec, str(approval_id), details)
    return approval_id


def _ask_in_slack(workflow_id: str, spec: WorkflowSpec, approval_id: str, details: dict[str, Any]) -> None:
    """With OPSQ_APPROVAL_SLACK_CHANNEL set, the approval is posted there with Approve / Deny buttons (the
    `slack.request_approval` action; a click reaches `opsq api`'s /slack/interactions). Keyed on the approval, so
    a redelivered pause posts once. A post that cannot be made leaves the approval as it is: the CLI and the API
    still decide it."""
    channel = get_settings().approval_slack_channel
    if not channel:
        return
    steps = "; ".join(f"{sid}: {d['platform']}.{d['action']}" for sid, d in details.items())
    text = f"Workflow *{spec.name}* ({workflow_id}) waits for approval {approval_id}: {steps}"[:3000]
    try:
        submit_action("slack", "request_approval", {"channel": channel, "text": text, "approval_id": approval_id},
                      priority="high", idempotency_key=f"approval:{approval_id}:slack", actor="opsqueue-approvals")
    except Exception:
        log.exception("could not post approval %s to Slack channel %s", approval_id, channel)


@app.task(name="opsq.workflow.continue", acks_late=True)
def workflow_continue(workflow_id: str, level: int, max_attempts: int) -> list[str]:
    """The end of one segment of a long workflow: sends the next (workflows.compiler, continue_segment)."""
    from workflows.compiler import continue_segment  # noqa: PLC0415 - workflows.compiler imports this module

    return continue_segment(workflow_id, level, max_attempts)


@app.task(name="opsq.workflow.complete", acks_late=True)
def workflow_complete(workflow_id: str) -> bool:
    return state.transition(workflow_id, WorkflowStatus.SUCCEEDED, allowed_from=(WorkflowStatus.RUNNING,),
                            event="succeeded")


@app.task(bind=True, name="opsq.workflow.rollback", acks_late=True, max_retries=None)
def workflow_rollback(self: Task, workflow_id: str, waited: int = 0) -> list[str]:
    """Undo what completed, newest first. Waits for steps still running (a sibling branch), so what
    they complete is undone too; steps not yet started are skipped."""
    steps = state.steps(workflow_id)
    if any(s["status"] == StepStatus.RUNNING for s in steps) and waited < 600:
        raise self.retry(args=[workflow_id], kwargs={"waited": waited + 1}, countdown=1.0)
    state.skip_unfinished(workflow_id, "workflow rolled back")
    spec, _ = spec_of(workflow_id)
    done = sorted((s for s in state.steps(workflow_id) if s["status"] == StepStatus.SUCCEEDED),
                  key=lambda s: s["completed_seq"] or 0, reverse=True)
    plan = []
    for s in done:
        comp = spec.step(s["step_id"]).compensation
        target = (comp.platform, comp.action) if isinstance(comp, CompensationSpec) else (s["platform"], s["action"])
        plan.append({"step_id": s["step_id"], "platform": target[0], "action": target[1],
                     "status": CompensationStatus.SKIPPED if comp is False else CompensationStatus.PENDING})
    comps = state.plan_compensations(workflow_id, plan)
    todo = [c for c in comps if c["status"] == CompensationStatus.PENDING]
    state.record(workflow_id, "rollback_planned",
                 detail=" -> ".join(c["step_id"] for c in comps) or "nothing completed")
    sigs = []
    for c in todo:
        sig = compensate_step.si(workflow_id, c["id"]).set(queue=c["platform"], routing_key=c["platform"])
        sig.link_error(compensation_failed.s(workflow_id=workflow_id, comp_id=c["id"]))
        sigs.append(sig)
    sigs.append(rollback_finished.si(workflow_id).set(queue=CONTROL_QUEUE, routing_key=CONTROL_QUEUE))
    chain(*sigs).apply_async()
    return [c["step_id"] for c in todo]


# throws: a compensation that fails for good is logged once by _compensation_failed and reported to Sentry once
# by failures_reported, not again by Celery (a traceback) and its Celery integration (see execute_action).
@app.task(bind=True, name="opsq.workflow.compensate", acks_late=True, max_retries=None, throws=(ActionFailed,))
def compensate_step(self: Task, workflow_id: str, comp_id: int, attempt: int = 1) -> dict[str, Any]:
    """One compensation: its own retried task on its platform's queue, guarded like any action (the
    breaker, the rate limit, and an execution record so a redelivery never undoes twice). Redis or the
    database away hands the message back instead of failing it (workers.outages)."""
    with sentry.failures_reported(), \
            outages.hand_back_on_outage({"workflow_id": workflow_id, "compensation_id": comp_id, "attempt": attempt}):
        return _compensate(self, workflow_id, comp_id, attempt)


def _compensate(self: Task, workflow_id: str, comp_id: int, attempt: int) -> dict[str, Any]:
    comp = state.compensation(comp_id)
    if comp["status"] == CompensationStatus.DONE:
        return comp["result"] or {}
    spec, run = spec_of(workflow_id)
    step = state.step(workflow_id, comp["step_id"])
    override = spec.step(comp["step_id"]).compensation
    # Per-key limits (a Slack channel's) count the undo too: its keys are read from the step's params; an
    # override's params are rendered only when called, so it is under its platform's limits only.
    ctx = Attempt(action_id=undo_action_id(step["action_id"], comp_id), platform=comp["platform"],
                  action=comp["action"], attempt=attempt, role="compensation",
                  params=None if isinstance(override, CompensationSpec) else step["params"] or {})

    def override_params() -> dict[str, Any]:
        assert isinstance(override, CompensationSpec)
        try:
            rendered: dict[str, Any] = templates.render(override.params,
                                                        context_for(workflow_id, spec, run, override.params))
        except templates.TemplateError as exc:
            raise UndoTemplateError(str(exc)) from None
        return rendered

    def undo(effect: Effect) -> dict[str, Any]:
        if isinstance(override, CompensationSpec):
            return executor(override.platform).execute(override.action, override_params(), effect)
        return executor(step["platform"]).compensate(step["action"], step["params"] or {},
                                                     step["output"] or {}, effect) or {"undo": "nothing to undo"}

    def find(effect: Effect) -> dict[str, Any] | None:
        # An undo whose answer was lost: a compensation spec is an action like any other (its effect looked up
        # by key); the step's own undo is done when the object it removes is gone.
        if isinstance(override, CompensationSpec):
            return executor(override.platform).find(override.action, override_params(), effect)
        return executor(step["platform"]).find_undone(step["action"], step["params"] or {}, step["output"] or {})

    end = run_attempt(ctx, undo, find=find, max_attempts=get_settings().max_attempts,
                      on_admitted=lambda: state.compensation_started(comp_id, attempt), what="compensation",
                      log_extra={"workflow_id": workflow_id, "step_id": comp["step_id"], "platform": comp["platform"],
                                 "action": comp["action"], "attempt": attempt})
    if end.ending == Ending.WAIT:
        raise self.retry(args=[workflow_id, comp_id], kwargs={"attempt": attempt}, countdown=end.delay_s)
    if end.ending == Ending.RETRY:
        state.compensation_update(comp_id, status=CompensationStatus.PENDING, error=f"[{end.kind}] {end.message}")
        raise self.retry(args=[workflow_id, comp_id], kwargs={"attempt": attempt + 1}, countdown=end.delay_s)
    if end.ending == Ending.FAILED:
        if end.already and comp["status"] == CompensationStatus.FAILED:  # a redelivery: recorded and logged before
            raise ActionFailed(str(end.kind), end.message, repeat=True)
        return _compensation_failed(workflow_id, comp, str(end.kind), end.message, crash=end.crash)
    result = end.result or {}
    state.compensation_update(comp_id, status=CompensationStatus.DONE, result=result, error=None,
                              finished_at=utcnow())
    if not end.already:
        state.record(workflow_id, "compensated", step_id=comp["step_id"],
                     detail=f"{comp['platform']}.{comp['action']}")
    return result


class UndoTemplateError(ExecutorError):
    """A compensation's template found nothing: the undo cannot run as written (not retried)."""

    kind = ErrorKind.TEMPLATE


def undo_action_id(step_action_id: str, comp_id: int) -> str:
    """The id under which the guards keep a compensation's execution record."""
    return f"{step_action_id}-undo-{comp_id}"


def forget_failed_undos(workflow_id: str) -> None:
    """Before a rollback is retried by hand: drop the execution records of the compensations that
    failed for good, so the guards let them run again (the ones that are done stay done)."""
    by_step = {s["step_id"]: s["action_id"] for s in state.steps(workflow_id)}
    failed = [c for c in state.compensations(workflow_id)
              if c["status"] in (CompensationStatus.FAILED, CompensationStatus.RUNNING)]
    if failed:
        guard_redis().delete(*(keys.run(undo_action_id(by_step[c["step_id"]], c["id"])) for c in failed))


def _compensation_failed(workflow_id: str, comp: dict[str, Any], kind: str, message: str,
                         crash: Exception | None = None) -> NoReturn:
    state.compensation_update(comp["id"], status=CompensationStatus.FAILED, error=f"[{kind}] {message}",
                              finished_at=utcnow())
    state.record(workflow_id, "compensation_failed", step_id=comp["step_id"], detail=f"[{kind}] {message}")
    log.error("compensation crashed and failed for good (%s): %s" if crash else "compensation failed for good (%s): %s",
              kind, message, exc_info=crash,
              extra={"workflow_id": workflow_id, "step_id": comp["step_id"], "platform": comp["platform"],
                     "action": comp["action"], sentry.FAILURE_LINE: True})
    raise ActionFailed(kind, message) from crash


@app.task(name="opsq.workflow.compensation_failed")
def compensation_failed(request: Any, exc: Any, traceback: Any, workflow_id: str, comp_id: int) -> None:
    state.transition(workflow_id, WorkflowStatus.ROLLBACK_FAILED,
                     allowed_from=(WorkflowStatus.ROLLING_BACK, WorkflowStatus.CANCELLING),
                     event="rollback_failed", detail=f"compensation {comp_id} failed: {exc}")


@app.task(name="opsq.workflow.rollback_finished", acks_late=True)
def rollback_finished(workflow_id: str) -> bool:
    # A cancel's rollback ends `cancelled`: what the operator asked for, with its effects undone.
    return (state.transition(workflow_id, WorkflowStatus.ROLLED_BACK, allowed_from=(WorkflowStatus.ROLLING_BACK,),
                             event="rolled_back")
            or state.transition(workflow_id, WorkflowStatus.CANCELLED, allowed_from=(WorkflowStatus.CANCELLING,),
                                event="cancelled_rolled_back", detail="the completed steps were compensated"))
