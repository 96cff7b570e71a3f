"""Cancelling an action: durable (in the store, then a mark in Redis the guards read at admit), so it holds when
every worker is stopped or restarts, unlike Celery's revokes, which live in the memory of the workers that
were running when they were sent (a revoke from Flower or `celery control revoke` ends here too:
workers.celery_app connects `task_revoked` to `revoked`).

What a cancel can stop is what has not called its platform yet: a scheduled, queued or retrying action. An
attempt calling the platform right now finishes its call (a call cannot be taken back half-way); the mark
then stops any retry, and a success stays a success. The mark lives as long as the action's record
(OPSQ_RETENTION_DAYS): a message may wait that long in a paused queue. A workflow's step is cancelled with its workflow
(workflows.client.cancel_workflow), never alone: its canvas would wait for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from workers import waiting
from workers.errors import OpsqError
from workers.guards import keys
from workers.guards.base import RunState
from workers.guards.connection import guard_redis
from workers.guards.execution import live_state
from workers.settings import get_settings
from workers.status import FINAL_ACTION_STATUSES, ActionStatus
from workers.store import actions as store
from workers.store import audit
from workers.store.db import get_engine
from workers.store.models import utcnow


@dataclass(frozen=True)
class Cancelled:
    action_id: str
    #: the action's status after the cancel: `cancelled`, or what it already was (nothing changed)
    status: str
    changed: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cancel_action(action_id: str, *, actor: str | None = None, why: str | None = None) -> Cancelled:
    """Cancel one action. The mark goes to Redis first, then the execution record is read: Redis runs commands one
    at a time, so an admit that came before the mark shows in the record (running, or already done), and every
    admit after it sees the mark and refuses. Only an action no attempt holds is then recorded `cancelled` in the
    store (its status and the audit entry in one transaction). If Redis refuses the mark, nothing is changed and
    the error says so. Idempotent: a second cancel changes nothing."""
    view = store.get(action_id)
    if view.workflow_id:
        raise OpsqError(f"action {action_id} is a step of workflow {view.workflow_id}: cancel the workflow "
                        f"(opsq workflow cancel {view.workflow_id})")
    if view.status in FINAL_ACTION_STATUSES:
        return Cancelled(action_id, view.status, False, f"already {view.status}: nothing to cancel")
    who = actor or audit.default_actor()
    r = guard_redis()
    settings = get_settings()
    # Kept as long as the record is (OPSQ_RETENTION_DAYS): a message can wait that long in a paused queue.
    r.set(keys.cancel(action_id), json.dumps({"by": who, "at": utcnow().isoformat(), "why": why}),
          ex=int(settings.retention_days * 86400))
    live = live_state(action_id, r) or {}
    state = live.get("state")
    if state == RunState.RUNNING:
        # Calling its platform now: the call finishes; the mark stops any further attempt. The record keeps its
        # status until the attempt ends (succeeded; a failure that would be retried ends cancelled at the retry's
        # admit; a failure for good ends failed, as any).
        audit.append("action_cancel", f"action:{action_id}", {"why": why, "while": "running"}, actor=who)
        return Cancelled(action_id, ActionStatus.RUNNING, True,
                         "it is calling its platform now: that call finishes; if it succeeds the action stays "
                         "succeeded, and it is not retried")
    if state in (RunState.DONE, RunState.FAILED):
        # Its outcome is settled in Redis and on its way to the store (written behind): too late.
        now = ActionStatus.SUCCEEDED if state == RunState.DONE else ActionStatus.FAILED
        return Cancelled(action_id, now, False, f"already {now}: nothing to cancel")
    reason = f"cancelled by {who}" + (f": {why}" if why else "")
    with get_engine().begin() as conn:
        if not store.end_unstarted(action_id, ActionStatus.CANCELLED, reason, conn=conn):
            current = store.get(action_id).status
            return Cancelled(action_id, current, False, f"it became {current} meanwhile: nothing to cancel")
        audit.append("action_cancel", f"action:{action_id}", {"why": why, "was": view.status}, actor=who, conn=conn)
    waiting.notify(action_id)
    return Cancelled(action_id, ActionStatus.CANCELLED, True, reason)


def revoked(action_id: str, *, expired: bool = False) -> None:
    """A Celery revoke of an action's message (Flower, `celery control revoke`): the worker dropped it without
    running it, so the record says so instead of waiting for detect_stuck to send it again."""
    try:
        view = store.get(action_id)
    except OpsqError:
        return  # not one of ours (or not recorded): nothing to say
    if view.workflow_id or view.status in FINAL_ACTION_STATUSES:
        return
    if expired:
        if store.end_unstarted(action_id, ActionStatus.EXPIRED, "its message expired before it ran (Celery)"):
            waiting.notify(action_id)
        return
    cancel_action(action_id, actor="celery-revoke", why="revoked through Celery (Flower or celery control)")
