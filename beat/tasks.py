"""The maintenance task that beat sends (one task, the job's name as its argument)."""

from __future__ import annotations

from typing import Any

from beat import maintenance
from beat.schedule import MAINTENANCE_TASK
from workers.celery_app import app


@app.task(name=MAINTENANCE_TASK, acks_late=True)
def maintenance_run(name: str) -> dict[str, Any]:
    return maintenance.run(name, origin="beat")
