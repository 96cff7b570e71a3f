"""execute_action: the one task every action runs as, on its platform's queue."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task
from tenacity import retry, stop_after_attempt, wait_exponential

from executors.errors import AuthError, ExecutorError, RetryableError
from workers import step_hooks
from workers.celery_app import EXECUTE_ACTION, app
from workers.errors import ActionFailed
from workers.guards import Admission, Attempt, Outcome, get_guard
from workers.redaction import kwargs_repr, redact
from workers.retry import backoff_delay
from workers.runtime import executor
from workers.settings import get_settings
from workers.store import actions as store
from workers.store import outcomes
from workers.store.models import utcnow

log = logging.getLogger("opsq.action")


@app.task(bind=True, name=EXECUTE_ACTION, max_retries=None, acks_late=True)
def execute_action(self: Task, *, action_id: str, platform: str, action: str, params: dict[str, Any],
                   max_attempts: int, attempt: int = 1, idempotency_key: str | None = None,
                   fail_fast: bool = False, step: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one attempt. Attempts are counted here, not by Celery's `retries`, because a guard's wait
    (breaker open, no rate-limit token, running elsewhere) re-schedules the action without using one.

    `step` ({workflow_id, step_id}) marks an action that is a workflow's step: the registered step
    hooks render its params' templates and follow its outcome (workers.step_hooks)."""
    ctx = Attempt(action_id=action_id, platform=platform, action=action, attempt=attempt, fail_fast=fail_fast)
    extra = {"action_id": action_id, "platform": platform, "action": action, "attempt": attempt}
    hooks = step_hooks.get() if step else None
    if step:
        extra.update(step)
        if hooks is None:
            _fail(ctx, "internal", "this worker cannot run workflow steps (workflows.tasks is not loaded)",
                  dead_letter=False, started=None, extra=extra)
        assert hooks is not None
        try:
            prepared = hooks.prepare(step, params)
        except ValueError as exc:  # a template that finds nothing: the step cannot run as written
            hooks.failed(step, "template", str(exc))
            _fail(ctx, "template", str(exc), dead_letter=False, started=None, extra=extra)
        # started() claims the step (queued -> running) only while its workflow runs: a rollback that
        # began meanwhile has skipped it, and then it must not call the platform.
        if prepared is None or not hooks.started(step, attempt):
            log.info("step skipped: its workflow is no longer running", extra=extra)
            store.mark_failed(action_id, attempt, "skipped: workflow no longer running", "skipped", dead_letter=False)
            return {"skipped": True}
        params = prepared
    guard = get_guard()
    admission = guard.admit(ctx)
    if not admission.run:
        result = _not_admitted(self, admission, ctx, extra)
        if hooks and step:
            hooks.succeeded(step, params, result)
        return result

    started = utcnow()
    try:
        result = redact(executor(platform).execute(action, params))
    except RetryableError as exc:
        final = attempt >= max_attempts
        _settle_failure(guard, ctx, admission, exc, final=final)
        if final:
            if hooks and step:
                hooks.failed(step, exc.kind, exc.message)
            _fail(ctx, exc.kind, exc.message, dead_letter=not step, started=started, extra=extra)
        settings = get_settings()
        delay = backoff_delay(attempt, base_s=settings.retry_base_s, cap_s=settings.retry_cap_s,
                              retry_after=exc.retry_after)
        store.mark_retrying(action_id, attempt, exc.message, exc.kind, delay, started)
        log.warning("attempt %d/%d failed (%s), retrying in %.2fs", attempt, max_attempts, exc.message, delay,
                    extra=extra)
        kwargs = {**self.request.kwargs, "attempt": attempt + 1}
        raise self.retry(kwargs=kwargs, countdown=delay, kwargsrepr=kwargs_repr(kwargs)) from None
    except ExecutorError as exc:
        # Auth failures are dead-lettered: once the credentials are fixed, `opsq dlq replay` runs them.
        # Other permanent errors would fail the same way again.
        _settle_failure(guard, ctx, admission, exc, final=True)
        if hooks and step:
            hooks.failed(step, exc.kind, exc.message)
        _fail(ctx, exc.kind, exc.message, dead_letter=isinstance(exc, AuthError) and not step, started=started,
              extra=extra)
    except Exception as exc:
        # A bug in an executor, not a platform failure: fail loudly, keep the message in the record.
        msg = f"{type(exc).__name__}: {exc}"
        guard.settle(ctx, admission, Outcome(ok=False, error_kind="internal", error=msg, final=True))
        log.exception("action crashed", extra=extra)
        if hooks and step:
            hooks.failed(step, "internal", msg)
        _fail(ctx, "internal", msg, dead_letter=True, started=started, extra=extra)

    # Redis first: once the outcome is there, a redelivered message cannot call the platform again,
    # even if this process dies before the database write below. A Redis blip must not lose it either:
    # settle is retried (tenacity) before anything else happens.
    _settle_success(guard, ctx, admission, result)
    try:
        if hooks and step:
            store.mark_succeeded(action_id, attempt, result, started)
            hooks.succeeded(step, params, result)
        else:
            outcomes.record_success(action_id, attempt, result, started)
    except Exception:
        # The platform call happened and is recorded in Redis; only the bookkeeping failed (database
        # busy or down). Try again shortly: the guards answer "done" and the bookkeeping is redone,
        # without a second call.
        log.exception("recording the outcome failed; retrying the bookkeeping", extra=extra)
        raise self.retry(kwargs=self.request.kwargs, countdown=2.0,
                         kwargsrepr=kwargs_repr(self.request.kwargs)) from None
    return result


@retry(stop=stop_after_attempt(6), wait=wait_exponential(multiplier=0.1, max=2.0), reraise=True)
def _settle_success(guard: Any, ctx: Attempt, admission: Admission, result: dict[str, Any]) -> None:
    guard.settle(ctx, admission, Outcome(ok=True, result=result))


def _not_admitted(task: Task, admission: Admission, ctx: Attempt, extra: dict[str, Any]) -> dict[str, Any]:
    if admission.verdict == "done":
        # A redelivered message for an action that already ran: the stored result, no second call.
        log.info("already done; returning the stored result", extra=extra)
        if not store.is_final(ctx.action_id):
            store.mark_succeeded(ctx.action_id, ctx.attempt, admission.result or {}, None)
        return admission.result or {}
    if admission.verdict == "failed":
        # It failed for good earlier, but the worker died before recording it: record it now, as it
        # would have been (dead-lettered unless the platform refused the params themselves).
        error = admission.error or {}
        kind = str(error.get("kind"))
        if not store.is_final(ctx.action_id):
            store.mark_failed(ctx.action_id, ctx.attempt, str(error.get("message")), kind,
                              dead_letter=kind not in ("permanent", "invalid_params", "template", "skipped")
                              and "workflow_id" not in extra)
        raise ActionFailed(kind, str(error.get("message")))
    if admission.verdict == "open_fail":
        _fail(ctx, "circuit_open", f"circuit breaker for {ctx.platform} is open (fail-fast action)",
              dead_letter=True, started=None, extra=extra)
    # A wait: re-scheduled, not an attempt. Jitter keeps the waiting actions from returning all at once.
    wait = admission.wait_s + random.uniform(0, 0.25 * admission.wait_s + 0.05)
    log.info("waiting %.2fs (%s)", wait, admission.verdict, extra=extra)
    raise task.retry(kwargs=task.request.kwargs, countdown=wait, kwargsrepr=kwargs_repr(task.request.kwargs))


def _settle_failure(guard: Any, ctx: Attempt, admission: Admission, exc: ExecutorError, *, final: bool) -> None:
    guard.settle(ctx, admission, Outcome(ok=False, error_kind=exc.kind, error=exc.message,
                                         health_failure=exc.health_failure, final=final))


def _fail(ctx: Attempt, kind: str, message: str, *, dead_letter: bool, started: Any, extra: dict[str, Any]) -> None:
    store.mark_failed(ctx.action_id, ctx.attempt, message, kind, dead_letter=dead_letter, started_at=started)
    log.error("action failed for good (%s): %s", kind, message, extra=extra)
    raise ActionFailed(kind, message) from None
