"""The client API: submit_action() validates, records and enqueues; ActionHandle follows it."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from executors.errors import InvalidParams
from executors.registry import validate_action
from workers.errors import SubmitError
from workers.queues import PRIORITY_NAMES, priority_value, queue_for
from workers.settings import get_settings
from workers.store import actions as store
from workers.store.actions import ActionView


@dataclass(frozen=True)
class ActionHandle:
    id: str

    def status(self) -> ActionView:
        return store.get(self.id)

    def wait(self, timeout: float = 60.0, poll_s: float = 0.05) -> ActionView:
        """Block until the action succeeded or failed for good; TimeoutError if it takes longer."""
        deadline = time.monotonic() + timeout
        while True:
            view = store.get(self.id)
            if view.done:
                return view
            if time.monotonic() >= deadline:
                raise TimeoutError(f"action {self.id} still {view.status} after {timeout:g}s")
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 0.5)


def check_submission(platform: str, action: str, params: Any, priority: str, max_attempts: int | None) -> None:
    if priority not in PRIORITY_NAMES:
        raise SubmitError(f"unknown priority {priority!r} (use one of: {', '.join(PRIORITY_NAMES)})")
    if not isinstance(params, dict):
        raise SubmitError(f"params must be a JSON object, got {type(params).__name__}")
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        raise SubmitError("max_attempts must be between 1 and 100")
    try:
        validate_action(platform, action, params)
    except InvalidParams as exc:
        raise SubmitError(str(exc)) from None


def submit_action(platform: str, action: str, params: dict[str, Any] | None = None, *,
                  priority: str = "normal", idempotency_key: str | None = None,
                  max_attempts: int | None = None, _replay_of: str | None = None) -> ActionHandle:
    """Validate, record and enqueue one action. Bad input raises SubmitError and nothing is queued
    or stored; if the broker refuses the message, the record is removed again and the error raised."""
    params = {} if params is None else params
    check_submission(platform, action, params, priority, max_attempts)
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise SubmitError("idempotency_key must be 1 to 200 characters")
    from workers.tasks import execute_action  # the Celery app resolves the broker on import

    attempts = max_attempts or get_settings().max_attempts
    action_id = uuid.uuid4().hex
    queue = queue_for(platform)
    store.create(action_id=action_id, platform=platform, action=action, params=params, priority=priority,
                 queue=queue, max_attempts=attempts, idempotency_key=idempotency_key, replay_of=_replay_of)
    try:
        execute_action.apply_async(
            kwargs={"action_id": action_id, "platform": platform, "action": action, "params": params,
                    "max_attempts": attempts, "idempotency_key": idempotency_key},
            task_id=action_id, queue=queue, routing_key=queue, priority=priority_value(priority),
        )
    except Exception:
        store.discard(action_id)
        raise
    return ActionHandle(action_id)
