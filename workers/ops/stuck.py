"""Finding actions that are stuck, and putting them right.

An action is stuck when its record has not moved for `OPSQ_STUCK_AFTER_S` and no message for it exists
anywhere in Redis (not queued, not delivered-and-unacknowledged) and no worker holds a live lease on it:
the message was lost (a broker restart without persistence, a purge, a bug). Such an action is sent
again; the guards' execution record makes that safe (what already ran returns its stored result). An
action whose outcome is in Redis but not in the database (a worker died between the two writes) is
reconciled. Past `OPSQ_STUCK_FAIL_AFTER_S` or `OPSQ_STUCK_MAX_REQUEUES`, it is failed with a clear reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from workers.enqueue import send_action
from workers.guards import keys
from workers.guards.base import RunState
from workers.guards.connection import guard_redis, server_time
from workers.ops.queue_ops import message_ids_in_flight
from workers.redaction import contains_redacted
from workers.settings import get_settings
from workers.status import OPEN_ACTION_STATUSES, ActionStatus, ErrorKind
from workers.store import actions as store
from workers.store.db import session
from workers.store.models import ActionRun, as_utc, utcnow


@dataclass
class StuckReport:
    requeued: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # old, but their message is still queued
    running: list[str] = field(default_factory=list)  # old, but a worker holds a live lease
    # Workflows with a step whose message is lost. Steps are never re-sent one by one (that would run
    # them out of order and outside their canvas): the workflow is resumed as a whole (beat does it).
    workflows: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _candidates(cutoff: Any, limit: int) -> list[ActionRun]:
    with session() as s:
        rows = s.scalars(select(ActionRun).where(
            ActionRun.status.in_(list(OPEN_ACTION_STATUSES)),
            ActionRun.updated_at < cutoff,
        ).order_by(ActionRun.created_at).limit(limit)).all()
        s.expunge_all()
        return list(rows)


def detect(*, act: bool = True, limit: int = 1000, cutoff: datetime | None = None) -> StuckReport:
    """`cutoff`: look at open actions not updated since then (default: OPSQ_STUCK_AFTER_S ago). After a loss
    reported at a known time (a worker that died, a Redis restart: workers.held_messages), that time."""
    settings = get_settings()
    r = guard_redis()
    now = utcnow()
    report = StuckReport()
    candidates = _candidates(cutoff or now - timedelta(seconds=settings.stuck_after_s), limit)
    if not candidates:
        return report
    in_flight, too_long = message_ids_in_flight(r)
    pipe = r.pipeline(transaction=False)
    for run in candidates:
        pipe.hgetall(keys.run(run.id))
    records = pipe.execute()
    server_now = server_time(r)
    for run, raw in zip(candidates, records, strict=True):
        rec = {k.decode(): v.decode() for k, v in raw.items()}
        state = rec.get("state")
        if run.workflow_id:
            # A workflow step that is queued has no message of its own until its turn in the canvas;
            # whether the workflow is stuck is judged per workflow (workflows.client.resume_stuck, run by beat
            # right after this).
            if run.id not in in_flight and state != RunState.RUNNING and run.workflow_id not in report.workflows:
                report.workflows.append(run.workflow_id)
            continue
        if state in (RunState.DONE, RunState.FAILED):
            report.reconciled.append(run.id)
            report.details[run.id] = f"outcome was in Redis ({state}), not in the database"
            if act:
                _reconcile(run, rec)
            continue
        if run.id in in_flight or run.queue in too_long:
            report.waiting.append(run.id)
            continue
        if state == RunState.RUNNING and float(rec.get("lease_until", 0)) > server_now:
            report.running.append(run.id)
            continue
        if (not state and run.status == ActionStatus.RUNNING
                and (now - as_utc(run.updated_at)).total_seconds() < settings.lease_s):
            # Started less than a lease ago, and Redis has no record of it (it lost its data): its worker may
            # still be calling the platform. Sending it again now could call twice; once the lease has
            # passed, its worker has either recorded the outcome or is gone.
            report.running.append(run.id)
            continue
        # A scheduled action's life starts when it was due, not when it was submitted (hours or days before).
        age = (now - max(as_utc(run.created_at), as_utc(run.scheduled_for) or as_utc(run.created_at))).total_seconds()
        requeues = int(r.get(f"opsq:stuck:{run.id}") or 0)
        reason = None
        if age > settings.stuck_fail_after_s:
            reason = f"stuck for {age / 3600:.1f} h with no message left in Redis"
        elif requeues >= settings.stuck_max_requeues:
            reason = f"requeued {requeues} times and lost again"
        elif contains_redacted(run.params):
            reason = "lost, and its stored params hold secrets: replay it with `opsq dlq replay ID --params-json`"
        if reason:
            report.failed.append(run.id)
            report.details[run.id] = reason
            if act:
                store.mark_failed(run.id, run.attempts, f"stuck: {reason}", ErrorKind.STUCK)
            continue
        report.requeued.append(run.id)
        report.details[run.id] = f"no message in Redis for {age:.0f}s; requeue #{requeues + 1}"
        if act:
            _requeue(run, r)
    return report


def _reconcile(run: ActionRun, rec: dict[str, str]) -> None:
    if rec["state"] == RunState.DONE:
        store.mark_succeeded(run.id, max(run.attempts, 1), json.loads(rec.get("result") or "{}"), None)
    else:
        error = json.loads(rec.get("error") or "{}")
        store.mark_failed(run.id, max(run.attempts, 1), str(error.get("message")), str(error.get("kind")))


def _requeue(run: ActionRun, r: Any) -> None:
    pipe = r.pipeline()
    pipe.incr(f"opsq:stuck:{run.id}")
    pipe.expire(f"opsq:stuck:{run.id}", 7 * 86400)
    pipe.execute()
    store.touch(run.id)  # first, so a detector running at the same time does not send it too
    send_action(action_id=run.id, platform=run.platform, action=run.action, params=run.params, queue=run.queue,
                priority=run.priority, max_attempts=run.max_attempts, idempotency_key=run.idempotency_key,
                fail_fast=run.fail_fast,
                attempt=max(run.attempts, 1) if run.status == ActionStatus.RETRYING else 1,
                expires_at=as_utc(run.expires_at).timestamp() if run.expires_at else None)
