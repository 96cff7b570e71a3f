"""The maintenance jobs the runbooks used to ask people to do by hand. Each is a plain function (run by
beat through beat.tasks, or by hand with `opsq maintenance run NAME`) that returns a JSON summary;
every run is recorded in `maintenance_runs` (health shows beat's last run from there)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import delete, exists, insert, select, update

from beat import alerts, backup
from beat.models import Alert, AlertState, MaintenanceRun
from workers import held_messages
from workers.guards.connection import guard_redis
from workers.ops.stuck import detect
from workers.settings import get_settings
from workers.store import actions as store
from workers.store import audit
from workers.store.db import get_engine
from workers.store.models import ActionRun, ApiAction, DeadLetter, table_of, utcnow
from workflows.client import expire_due, expire_overdue, resume_stuck
from workflows.models import WorkflowStep

log = logging.getLogger("opsq.maintenance")
_RUNS = table_of(MaintenanceRun)


def detect_stuck() -> dict[str, Any]:
    report = detect(act=True)
    summary = {k: v for k, v in report.to_dict().items() if v and k != "workflows"}
    resumed = resume_stuck(get_settings().stuck_after_s)
    if resumed:
        summary["workflows_resumed"] = resumed
    return summary


def recover_lost() -> dict[str, Any]:
    """After a loss someone reported (a worker that died, a channel that lost its connection, a Redis restart:
    workers.held_messages.RECOVERY_KEY), at once rather than OPSQ_STUCK_AFTER_S later: open actions untouched
    since then with no message anywhere are sent again, and workflows with a lost step resumed."""
    raw = guard_redis().getdel(held_messages.RECOVERY_KEY)
    if raw is None:
        return {"nothing_reported": True}
    at_text, _, why = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(" ")
    # A little before the report: an action updated in the same instant may have lost its message too.
    since = datetime.fromtimestamp(float(at_text) - 2.0, UTC)
    report = detect(act=True, cutoff=since)
    summary: dict[str, Any] = {"because": why, **{k: v for k, v in report.to_dict().items()
                                                 if v and k != "workflows"}}
    resumed = resume_stuck(max((utcnow() - since).total_seconds(), 0.0))
    if resumed:
        summary["workflows_resumed"] = resumed
    return summary


def expire_approvals() -> dict[str, Any]:
    """Approvals past their expiry roll their workflows back; workflows past their deadline are cancelled."""
    return {"expired": expire_due(), "workflows_past_deadline": expire_overdue()}


def evaluate_alerts() -> dict[str, Any]:
    summary: dict[str, Any] = dict(alerts.evaluate())
    if summary.get("not_evaluated"):
        summary["ok"] = False  # recorded as a failed run: some rule could not say whether to fire
    return summary


def cleanup() -> dict[str, Any]:
    """Old finished action records (not referenced by a dead letter or a workflow) with the API's note of which
    token submitted each (`api_actions`), old maintenance runs and cleared alerts. Idempotency records and Celery
    results expire in Redis by their own TTL."""
    settings = get_settings()
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    with get_engine().begin() as conn:
        keep = select(DeadLetter.action_id).union(select(WorkflowStep.action_id))
        old = select(ActionRun.id).where(
            ActionRun.status.in_(store.FINISHED), ActionRun.finished_at < cutoff,
            ActionRun.id.not_in(keep))
        # Counted before they go, in the same transaction: the count of finished actions must not drop.
        store.tally_deleted(conn, old)
        # In the same transaction: which API token submitted each record deleted (api_actions), then the records.
        api_rows = conn.execute(delete(ApiAction).where(ApiAction.action_id.in_(old))).rowcount
        actions = conn.execute(delete(ActionRun).where(ActionRun.id.in_(old))).rowcount
        # And the notes whose record is gone already (deleted before the clean-up knew of them). Only old ones: a
        # recent note's record may be in the middle of being written.
        api_rows += conn.execute(delete(ApiAction).where(
            ApiAction.created_at < cutoff, ~exists().where(ActionRun.id == ApiAction.action_id))).rowcount
        runs = conn.execute(delete(MaintenanceRun).where(MaintenanceRun.started_at < cutoff)).rowcount
        cleared = conn.execute(delete(Alert).where(Alert.state == AlertState.CLEARED,
                                                   Alert.cleared_at < cutoff)).rowcount
    return {"action_records_deleted": actions, "api_action_rows_deleted": api_rows,
            "maintenance_runs_deleted": runs, "alerts_deleted": cleared,
            "older_than_days": settings.retention_days}


def backup_state() -> dict[str, Any]:
    settings = get_settings()
    path = backup.create()
    removed = backup.prune(settings.backup_retention_days)
    return {"backup": str(path), "pruned": removed}


def verify_audit() -> dict[str, Any]:
    # The job (a writer) chains what is pending first, so the check covers every submit so far; the
    # operator's `opsq audit verify` reads only (it may be run on a damaged copy).
    audit.seal()
    verdict = audit.verify()
    cond = [] if verdict.ok else [alerts.Condition(
        "audit_chain", "audit_tampered", "critical",
        f"audit trail tampered at entry {verdict.first_bad_id}: {verdict.reason} (opsq audit verify)")]
    alerts.sync(cond, ("audit_chain",))
    return verdict.to_dict()


def seal_audit() -> dict[str, Any]:
    return {"sealed": audit.seal()}


JOBS: dict[str, Callable[[], dict[str, Any]]] = {
    "detect_stuck": detect_stuck,
    "recover_lost": recover_lost,
    "expire_approvals": expire_approvals,
    "evaluate_alerts": evaluate_alerts,
    "cleanup": cleanup,
    "backup_state": backup_state,
    "verify_audit": verify_audit,
    "seal_audit": seal_audit,
}


RUN_WHEN_REDIS_FULL = frozenset({"evaluate_alerts"})


def run(name: str, origin: str = "manual") -> dict[str, Any]:
    """Run one job now, recording it. Raises ValueError for an unknown name; a failing job is recorded
    as failed and its error re-raised."""
    job = JOBS.get(name)
    if job is None:
        raise ValueError(f"unknown maintenance job {name!r} (known: {', '.join(JOBS)})")
    # One run of a job at a time, across every worker and the CLI (a backlog of beat messages after an
    # outage, or a run by hand during beat's, must not run it twice at once).

    lock = guard_redis().lock(f"opsq:maintenance:{name}", timeout=3600, blocking=False)
    try:
        acquired = lock.acquire()
    except redis.exceptions.OutOfMemoryError:
        # A full Redis refuses the lock (a write). The alerts must still be able to say that Redis is full:
        # that job runs without it (at worst, two runs at the same instant record one alert twice).
        if name not in RUN_WHEN_REDIS_FULL:
            raise
        log.warning("Redis is out of memory: running %s without its lock", name)
        return _run_locked(name, job, origin)
    if not acquired:
        return {"skipped": f"{name} is running elsewhere"}
    try:
        return _run_locked(name, job, origin)
    finally:
        lock.release()


def _run_locked(name: str, job: Callable[[], dict[str, Any]], origin: str) -> dict[str, Any]:
    started = utcnow()
    with get_engine().begin() as conn:
        key = conn.execute(insert(_RUNS).values(name=name, started_at=started, origin=origin)).inserted_primary_key
        assert key is not None  # a single-row INSERT always has one
        run_id: int = key[0]
    try:
        summary = job()
    except Exception as exc:
        _finish(run_id, False, {"error": f"{type(exc).__name__}: {exc}"})
        log.exception("maintenance job %s failed", name)
        raise
    # A job that found a problem it exists to find (a broken audit chain) is recorded as not ok.
    _finish(run_id, summary.get("ok", True) is not False, summary)
    return summary


def _finish(run_id: int, ok: bool, summary: dict[str, Any]) -> None:
    with get_engine().begin() as conn:
        conn.execute(update(_RUNS).where(_RUNS.c.id == run_id).values(finished_at=utcnow(), ok=ok,
                                                                     summary=summary))


def last_runs() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with get_engine().connect() as conn:
        for row in conn.execute(select(_RUNS).order_by(_RUNS.c.id.desc()).limit(500)):
            out.setdefault(row.name, dict(row._mapping))
    return out
