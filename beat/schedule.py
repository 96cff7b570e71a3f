"""The beat schedule: every maintenance job on the `maintenance` queue, each interval configurable
(OPSQ_BEAT_INTERVALS='{"cleanup": 600}', seconds)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from workers.queues import MAINTENANCE_QUEUE
from workers.settings import Settings

MAINTENANCE_TASK = "opsq.maintenance.run"

DEFAULTS: dict[str, float | str] = {
    "detect_stuck": 60,
    "expire_approvals": 60,
    "evaluate_alerts": 60,
    "cleanup": 3600,
    "backup_state": "daily",  # at OPSQ_BEAT_BACKUP_HOUR_UTC:00
    "verify_audit": 86400,
    "seal_audit": 30,  # chains the submits' audit entries (workers.store.audit.seal)
}


def build(settings: Settings) -> dict[str, dict[str, Any]]:
    unknown = set(settings.beat_intervals) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"OPSQ_BEAT_INTERVALS names unknown job(s): {', '.join(sorted(unknown))}")
    schedule: dict[str, dict[str, Any]] = {}
    for name, default in DEFAULTS.items():
        every = settings.beat_intervals.get(name, default)
        when: Any = (crontab(minute=0, hour=settings.beat_backup_hour_utc) if every == "daily"
                     else timedelta(seconds=float(every)))
        # A run not started within its own interval is dropped: the next one does the same work.
        expires = 3600.0 if every == "daily" else max(float(every), 1.0)
        schedule[name] = {"task": MAINTENANCE_TASK, "schedule": when, "args": (name,),
                          "options": {"queue": MAINTENANCE_QUEUE, "routing_key": MAINTENANCE_QUEUE,
                                      "expires": expires}}
    return schedule


def describe(when: Any) -> str:
    """A schedule as people write it: `cron 0 2 * * *` for a crontab, `every 30s` / `every 1d` / `every 1h30m`
    for an interval (what `opsq maintenance list` shows, not Celery's reprs)."""
    if isinstance(when, crontab):
        fields = (when._orig_minute, when._orig_hour, when._orig_day_of_month, when._orig_month_of_year,
                  when._orig_day_of_week)
        return "cron " + " ".join(str(f) for f in fields)
    seconds = when.total_seconds() if isinstance(when, timedelta) else float(when)
    return "every " + interval_text(seconds)


def interval_text(seconds: float) -> str:
    """90 -> `1m30s`, 86400 -> `1d`, 0.5 -> `0.5s`: the largest units first, zero parts left out."""
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g}s"
    left = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"
