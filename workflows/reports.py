"""Reading the workflows' tables for operators (read-only): what `opsq logs errors` adds to the actions'."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from workers.store.db import get_engine
from workers.store.models import as_utc
from workflows.models import Compensation
from workflows.status import CompensationStatus


def compensation_errors(limit: int = 50) -> list[dict[str, Any]]:
    """The newest compensations that failed for good."""
    with get_engine().connect() as conn:
        comps = conn.execute(select(Compensation.workflow_id, Compensation.step_id, Compensation.platform,
                                    Compensation.action, Compensation.error, Compensation.finished_at)
                             .where(Compensation.status == CompensationStatus.FAILED)
                             .order_by(Compensation.finished_at.desc()).limit(limit)).all()
    return [{"at": as_utc(c.finished_at), "what": "compensation", "id": f"{c.workflow_id}/{c.step_id}",
             "platform": c.platform, "action": c.action, "kind": "compensation", "attempts": None, "error": c.error}
            for c in comps]
