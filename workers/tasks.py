"""execute_action: the one task every action runs as, on its platform's queue."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, NoReturn

from celery import Task

from workers import outages, step_hooks, waiting
from workers.attempt import Ending, run_attempt
from workers.celery_app import EXECUTE_ACTION, app
from workers.errors import ActionFailed
from workers.executor_pool import executor
from workers.guards import Attempt
from workers.observability import sentry
from workers.redaction import kwargs_repr
from workers.settings import get_settings
from workers.status import ActionStatus, ErrorKind
from workers.store import actions as store
from workers.store import outcomes

log = logging.getLogger("opsq.action")


# throws: an ActionFailed is an expected failure, logged once (at ERROR, a crash's with its traceback) by _fail;
# Celery logs it at INFO without a traceback instead of a second ERROR "raised unexpected". Its Celery
# integration then skips it too, so failures_reported sends it to Sentry, once. Any other exception is a crash
# of the task itself: Celery's traceback and the integration's event, as before.
@app.task(bind=True, name=EXECUTE_ACTION, max_retries=None, acks_late=True, throws=(ActionFailed,))
def execute_action(self: Task, *, action_id: str, platform: str, action: str, params: dict[str, Any],
                   max_attempts: int, attempt: int = 1, idempotency_key: str | None = None,
                   fail_fast: bool = False, step: dict[str, Any] | None = None,
                   expires_at: float | None = None) -> dict[str, Any]:
    """Run one attempt. Attempts are counted here, not by Celery's `retries`, because a guard's wait
    (breaker open, no rate-limit token, running elsewhere) re-schedules the action without using one.

    `step` ({workflow_id, step_id}) marks an action that is a workflow's step: the registered step
    hooks render its params' templates and follow its outcome (workers.step_hooks).

    Redis or the database away is not the action's failure: the attempt waits for it, then hands the message
    back to its queue (Reject with requeue), so Celery never acknowledges it as failed. Whatever had happened
    is in the guards' execution record, so the next delivery does only what is left (no second call).

    `expires_at` (Unix time): the deadline; the guards refuse an attempt that would start after it (`expired`)."""
    extra = {"action_id": action_id, "platform": platform, "action": action, "attempt": attempt}
    with sentry.failures_reported(), outages.hand_back_on_outage(extra):
        return _execute(self, action_id=action_id, platform=platform, action=action, params=params,
                        max_attempts=max_attempts, attempt=attempt, idempotency_key=idempotency_key,
                        fail_fast=fail_fast, step=step, expires_at=expires_at)


def _execute(self: Task, *, action_id: str, platform: str, action: str, params: dict[str, Any],
             max_attempts: int, attempt: int, idempotency_key: str | None, fail_fast: bool,
             step: dict[str, Any] | None, expires_at: float | None) -> dict[str, Any]:
    ctx = Attempt(action_id=action_id, platform=platform, action=action, attempt=attempt, fail_fast=fail_fast,
                  effect_key=idempotency_key or action_id, expires_at=expires_at)
    extra = {"action_id": action_id, "platform": platform, "action": action, "attempt": attempt}
    hooks = step_hooks.get() if step else None
    if step:
        extra.update(step)
        if hooks is None:
            _fail(ctx, ErrorKind.INTERNAL, "this worker cannot run workflow steps (workflows.tasks is not loaded)",
                  started=None, extra=extra)
        try:
            # begin() claims the step (queued -> running) only while its workflow runs: a rollback that
            # began meanwhile has skipped it, and then it must not call the platform.
            prepared = hooks.begin(step, params, attempt)
        except ValueError as exc:  # a template that finds nothing: the step cannot run as written
            hooks.failed(step, ErrorKind.TEMPLATE, str(exc))
            _fail(ctx, ErrorKind.TEMPLATE, str(exc), started=None, extra=extra)
        if prepared is None:
            log.info("step skipped: its workflow is no longer running", extra=extra)
            store.mark_skipped(action_id, "its workflow is no longer running")
            waiting.notify(action_id)
            return {"skipped": True}
        params = prepared
    ctx = dataclasses.replace(ctx, params=params)  # per-key limits read their keys from the params as called
    end = run_attempt(ctx, lambda effect: executor(platform).execute(action, params, effect),
                      find=lambda effect: executor(platform).find(action, params, effect),
                      max_attempts=max_attempts, log_extra=extra)
    if end.ending in (Ending.CANCELLED, Ending.EXPIRED):
        # Ended without a call; the message is acknowledged. A cancel was recorded in the store before its mark
        # reached Redis (workers.cancel), so this usually finds it done; a revoke or a deadline is written here.
        status = ActionStatus.CANCELLED if end.ending == Ending.CANCELLED else ActionStatus.EXPIRED
        if store.end_unstarted(action_id, status, end.message):
            log.info("%s: %s", status, end.message, extra=extra)
        waiting.notify(action_id)
        return {status.value: True}
    if end.ending == Ending.WAIT:
        log.info("waiting %.2fs (%s)", end.delay_s, end.verdict, extra=extra)
        raise self.retry(kwargs=self.request.kwargs, countdown=end.delay_s,
                         kwargsrepr=kwargs_repr(self.request.kwargs))
    if end.ending == Ending.RETRY:
        assert end.started_at is not None and end.kind is not None
        try:
            store.mark_retrying(action_id, attempt, end.message, end.kind, end.delay_s, end.started_at)
        except Exception as exc:
            if outages.outage_of(exc) is None:
                raise
            # The record says what it said before until the next attempt writes; what matters is that the
            # next attempt is sent, and it is (below), whatever the database is doing.
            log.warning("could not record the retry (%s); retrying anyway", exc, extra=extra)
        log.warning("attempt %d/%d failed (%s), retrying in %.2fs", attempt, max_attempts, end.message, end.delay_s,
                    extra=extra)
        kwargs = {**self.request.kwargs, "attempt": attempt + 1}
        raise self.retry(kwargs=kwargs, countdown=end.delay_s, kwargsrepr=kwargs_repr(kwargs))
    if end.ending == Ending.FAILED:
        kind = end.kind or ErrorKind.INTERNAL
        if hooks and step:
            hooks.failed(step, kind, end.message)
        if end.already and store.is_final(action_id):
            raise ActionFailed(kind, end.message, repeat=True)  # logged and reported when it was recorded
        _fail(ctx, kind, end.message, started=end.started_at, extra=extra, crash=end.crash)
    result = end.result or {}
    if end.already:
        # A redelivered message for an action that already ran: the stored result, no second call.
        log.info("already done; returning the stored result", extra=extra)
    try:
        if hooks and step:
            # The action's record and the step's in one transaction (and the workflow's end, after its last step).
            row = None if end.already and store.is_final(action_id) else store.succeeded_row(
                action_id, attempt, result, end.started_at, reconciled=end.reconciled)
            hooks.succeeded(step, params, result, row)
        elif end.already:
            if not store.is_final(action_id):
                store.mark_succeeded(action_id, attempt, result, None)
        elif end.unsettled:
            # Redis does not have this outcome: write-behind would leave the database as its only record
            # for a moment; write it now.
            store.mark_succeeded(action_id, attempt, result, end.started_at, reconciled=end.reconciled)
        else:
            assert end.started_at is not None
            outcomes.record_success(action_id, attempt, result, end.started_at, reconciled=end.reconciled)
    except Exception:
        # The platform call happened and is recorded in Redis; only the bookkeeping failed (database
        # busy or down). Try again shortly: the guards answer "done" and the bookkeeping is redone,
        # without a second call.
        log.exception("recording the outcome failed; retrying the bookkeeping", extra=extra)
        raise self.retry(kwargs=self.request.kwargs, countdown=2.0,
                         kwargsrepr=kwargs_repr(self.request.kwargs)) from None
    if end.already or end.unsettled or not get_settings().guards_enabled:
        # The settle script published nothing this time (no settle, or none that reached Redis): the store
        # has the outcome now, so waiters are told here.
        waiting.notify(action_id)
    return result


def _fail(ctx: Attempt, kind: str, message: str, *, started: Any, extra: dict[str, Any],
          crash: Exception | None = None) -> NoReturn:
    """The action failed for good: recorded, its waiters told, one log line (a crash's with its traceback), and
    ActionFailed raised (chained to the crash), which failures_reported sends to Sentry."""
    store.mark_failed(ctx.action_id, ctx.attempt, message, kind, started_at=started)
    waiting.notify(ctx.action_id)  # after the store has it: a waiter reads a failure (dead letter or not) there
    log.error("action crashed and failed for good (%s): %s" if crash else "action failed for good (%s): %s",
              kind, message, exc_info=crash, extra={**extra, sentry.FAILURE_LINE: True})
    raise ActionFailed(kind, message) from crash
