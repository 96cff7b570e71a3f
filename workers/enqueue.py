"""An action's message: the one place that builds execute_action's kwargs and options. `send_action` publishes
one (submit in workers.client, the dead-letter replays through it, the stuck detector's re-send);
`action_signature` is the same message as a Celery signature, for a workflow's canvas (workflows.compiler)."""

from __future__ import annotations

from typing import Any

from celery.canvas import Signature

from workers.priorities import priority_value
from workers.redaction import kwargs_repr
from workers.tasks import execute_action


def action_signature(*, action_id: str, platform: str, action: str, params: dict[str, Any], queue: str,
                     priority: str, max_attempts: int, idempotency_key: str | None = None, fail_fast: bool = False,
                     attempt: int = 1, step: dict[str, Any] | None = None,
                     expires_at: float | None = None) -> Signature:
    kwargs: dict[str, Any] = {"action_id": action_id, "platform": platform, "action": action, "params": params,
                              "max_attempts": max_attempts, "idempotency_key": idempotency_key,
                              "fail_fast": fail_fast}
    if attempt != 1:
        kwargs["attempt"] = attempt
    if step is not None:
        kwargs["step"] = step
    if expires_at is not None:
        kwargs["expires_at"] = expires_at
    # The Celery task id is the action id; kwargsrepr keeps params' secrets out of logs, events and Flower.
    return execute_action.si(**kwargs).set(queue=queue, routing_key=queue, priority=priority_value(priority),
                                           task_id=action_id, kwargsrepr=kwargs_repr(kwargs))


def send_action(*, action_id: str, platform: str, action: str, params: dict[str, Any], queue: str, priority: str,
                max_attempts: int, idempotency_key: str | None, fail_fast: bool, attempt: int = 1,
                expires_at: float | None = None) -> None:
    """Publish a standalone action (action_signature's message, with no `step`). ignore_result: its
    outcome lives in the store and the guards' record in Redis; Celery's result backend would keep a third
    copy (and cost the worker four Redis round trips: the STARTED and SUCCESS writes, each a read and a
    write). Workflow steps keep their results: chords count them in the backend."""
    action_signature(action_id=action_id, platform=platform, action=action, params=params, queue=queue,
                     priority=priority, max_attempts=max_attempts, idempotency_key=idempotency_key,
                     fail_fast=fail_fast, attempt=attempt, expires_at=expires_at).apply_async(ignore_result=True)
