"""Sending an action's message: the one place that builds execute_action's kwargs and publishes them.
Used by submit (workers.client), dead-letter replays (through submit) and the stuck detector's re-send."""

from __future__ import annotations

from typing import Any

from workers.queues import priority_value
from workers.redaction import kwargs_repr
from workers.tasks import execute_action


def send_action(*, action_id: str, platform: str, action: str, params: dict[str, Any], queue: str, priority: str,
                max_attempts: int, idempotency_key: str | None, fail_fast: bool, attempt: int = 1) -> None:
    kwargs: dict[str, Any] = {"action_id": action_id, "platform": platform, "action": action, "params": params,
                              "max_attempts": max_attempts, "idempotency_key": idempotency_key,
                              "fail_fast": fail_fast}
    if attempt != 1:
        kwargs["attempt"] = attempt
    # ignore_result: an action's outcome lives in the store and the guards' record in Redis; Celery's
    # result backend would keep a third copy (and cost the worker four Redis round trips: the STARTED and
    # SUCCESS writes, each a read and a write). Workflow steps keep their results: chords count them.
    execute_action.apply_async(kwargs=kwargs, task_id=action_id, queue=queue, routing_key=queue,
                               priority=priority_value(priority), kwargsrepr=kwargs_repr(kwargs),
                               ignore_result=True)
