"""execute_action: the one task every action runs as, on its platform's queue."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from executors.errors import AuthError, ExecutorError, PermanentError, RetryableError
from workers.celery_app import EXECUTE_ACTION, app
from workers.errors import ActionFailed
from workers.guards import Attempt, Outcome, get_guard
from workers.redaction import redact
from workers.retry import backoff_delay
from workers.runtime import executor
from workers.settings import get_settings
from workers.store import actions as store

log = logging.getLogger("opsq.action")


@app.task(bind=True, name=EXECUTE_ACTION, max_retries=None, acks_late=True)
def execute_action(self: Task, *, action_id: str, platform: str, action: str, params: dict[str, Any],
                   max_attempts: int, attempt: int = 1, idempotency_key: str | None = None) -> dict[str, Any]:
    """Run one attempt. Attempts are counted here, not by Celery's `retries`, because a guard's
    "wait" (breaker open, no rate-limit token) re-schedules the action without using up an attempt."""
    settings = get_settings()
    ctx = Attempt(action_id=action_id, platform=platform, action=action, attempt=attempt,
                  idempotency_key=idempotency_key)
    guard = get_guard()
    admission = guard.admit(ctx)
    if not admission.run:
        if admission.result is not None:
            return admission.result
        raise self.retry(kwargs=self.request.kwargs, countdown=admission.wait_s or 1.0)

    store.mark_running(action_id, attempt)
    extra = {"action_id": action_id, "platform": platform, "action": action, "attempt": attempt}
    try:
        result = executor(platform).execute(action, params)
    except RetryableError as exc:
        guard.settle(ctx, Outcome(ok=False, error_kind=exc.kind, health_failure=exc.health_failure))
        if attempt >= max_attempts:
            _fail(action_id, attempt, exc, dead_letter=True, extra=extra)
        delay = backoff_delay(attempt, base_s=settings.retry_base_s, cap_s=settings.retry_cap_s,
                              retry_after=exc.retry_after)
        store.mark_retrying(action_id, attempt, exc.message, exc.kind, delay)
        log.warning("attempt %d/%d failed (%s), retrying in %.2fs", attempt, max_attempts, exc.message, delay,
                    extra=extra)
        raise self.retry(kwargs={**self.request.kwargs, "attempt": attempt + 1}, countdown=delay) from None
    except AuthError as exc:
        # Dead-lettered: once an operator fixes the credentials, `opsq dlq replay` runs it again.
        guard.settle(ctx, Outcome(ok=False, error_kind=exc.kind))
        _fail(action_id, attempt, exc, dead_letter=True, extra=extra)
    except PermanentError as exc:
        guard.settle(ctx, Outcome(ok=False, error_kind=exc.kind))
        _fail(action_id, attempt, exc, dead_letter=False, extra=extra)
    except ExecutorError as exc:
        guard.settle(ctx, Outcome(ok=False, error_kind=exc.kind))
        _fail(action_id, attempt, exc, dead_letter=False, extra=extra)
    except Exception as exc:
        # A bug in an executor, not a platform failure: fail loudly, keep the message in the record.
        guard.settle(ctx, Outcome(ok=False, error_kind="internal"))
        msg = f"{type(exc).__name__}: {exc}"
        store.mark_failed(action_id, attempt, msg, "internal", dead_letter=True)
        log.exception("action crashed", extra=extra)
        raise ActionFailed("internal", msg) from None

    guard.settle(ctx, Outcome(ok=True, result=result))
    store.mark_succeeded(action_id, attempt, result)
    return redact(result)


def _fail(action_id: str, attempt: int, exc: ExecutorError, *, dead_letter: bool, extra: dict[str, Any]) -> None:
    store.mark_failed(action_id, attempt, exc.message, exc.kind, dead_letter=dead_letter)
    log.error("action failed for good (%s): %s", exc.kind, exc.message, extra=extra)
    raise ActionFailed(exc.kind, exc.message) from None
