"""Beat's part of `opsq health`: is a beat leader ticking, and which job ran last."""

from __future__ import annotations

import json
import time

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from beat.models import MaintenanceRun
from beat.scheduler import HEARTBEAT_KEY
from workers.guards.connection import guard_redis
from workers.ops.health import OK, WARN, Check
from workers.store.db import get_engine
from workers.store.models import as_utc


def checks() -> list[Check]:
    raw = guard_redis().get(HEARTBEAT_KEY)
    if not raw:
        return [Check("beat", WARN, "no beat is running (opsq beat): maintenance is not scheduled")]
    beat = json.loads(raw)
    age = time.time() - float(beat["at"])
    return [Check("beat", OK if age < 60 else WARN, f"leader {beat['beat']} ticked {age:.0f}s ago; {_last_job()}")]


def _last_job() -> str:
    try:
        with get_engine().connect() as conn:
            row = conn.execute(select(MaintenanceRun.name, func.max(MaintenanceRun.started_at))
                               .group_by(MaintenanceRun.name)
                               .order_by(func.max(MaintenanceRun.started_at).desc())).first()
    except Exception:  # the database check reports the database (down, or a schema to upgrade); this adds detail
        return "last job unknown (see the database check)"
    return f"last job {row[0]} at {row[1]:%H:%M:%S}" if row else "no job has run yet"


def metric_families() -> list[Metric]:
    """Beat's part of the Prometheus metrics (`opsq exporter`): whether a leader ticks, and per maintenance job
    when it last succeeded and whether its last run did."""
    raw = guard_redis().get(HEARTBEAT_KEY)
    up = GaugeMetricFamily("opsq_beat_up", "1 when a beat leader has ticked within the last 60 s")
    heartbeat = GaugeMetricFamily("opsq_beat_heartbeat_age_seconds", "Seconds since the beat leader's last tick")
    if raw:
        age = time.time() - float(json.loads(raw)["at"])
        up.add_metric([], 1.0 if age < 60 else 0.0)
        heartbeat.add_metric([], age)
    else:
        up.add_metric([], 0.0)
    last_ok = GaugeMetricFamily("opsq_maintenance_last_success_timestamp_seconds", "When each maintenance job last "
                                "finished successfully (Unix time; from beat or `opsq maintenance run`)",
                                labels=["job"])
    last_run_ok = GaugeMetricFamily("opsq_maintenance_last_run_ok", "1 when the job's latest run succeeded, 0 when "
                                    "it failed (or has not finished)", labels=["job"])
    with get_engine().connect() as conn:
        for name, finished in conn.execute(select(MaintenanceRun.name, func.max(MaintenanceRun.finished_at))
                                           .where(MaintenanceRun.ok.is_(True)).group_by(MaintenanceRun.name)):
            last_ok.add_metric([name], as_utc(finished).timestamp())
        latest = (select(MaintenanceRun.name, func.max(MaintenanceRun.id).label("id"))
                  .group_by(MaintenanceRun.name).subquery())
        for name, ok in conn.execute(select(MaintenanceRun.name, MaintenanceRun.ok)
                                     .join(latest, MaintenanceRun.id == latest.c.id)):
            last_run_ok.add_metric([name], 1.0 if ok else 0.0)
    return [up, heartbeat, last_ok, last_run_ok]
