"""Beat's part of `opsq health`: is a beat leader ticking, and which job ran last."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from beat.models import MaintenanceRun
from beat.scheduler import HEARTBEAT_KEY
from workers.guards.connection import guard_redis
from workers.ops.health import OK, WARN, Check
from workers.store.db import get_engine


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
