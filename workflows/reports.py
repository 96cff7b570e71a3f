"""Reading the workflows' tables for operators (read-only): what `opsq logs errors` adds to the actions', and
the workflows' part of the Prometheus metrics (`opsq exporter`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from workers.store.db import get_engine
from workers.store.models import as_utc
from workflows.models import Approval, Compensation, WorkflowRun
from workflows.status import ApprovalStatus, CompensationStatus, WorkflowStatus


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


def metric_families() -> list[Metric]:
    """Workflows by status, the approvals waiting for a decision and how long the oldest has waited, and the
    compensations by status: read from the store at each scrape (workers.observability.metrics)."""
    with get_engine().connect() as conn:
        runs = dict(conn.execute(select(WorkflowRun.status, func.count()).group_by(WorkflowRun.status)).all())
        waiting, oldest = conn.execute(select(func.count(), func.min(Approval.created_at))
                                       .where(Approval.status == ApprovalStatus.PENDING)).one()
        comps = dict(conn.execute(select(Compensation.status, func.count()).group_by(Compensation.status)).all())
    workflows = GaugeMetricFamily("opsq_workflows", "Workflow runs in the store, by status", labels=["status"])
    for run_status in WorkflowStatus:
        workflows.add_metric([run_status.value], float(runs.get(run_status.value, 0)))
    pending = GaugeMetricFamily("opsq_approvals_pending", "Approvals waiting for a decision")
    pending.add_metric([], float(waiting))
    age = GaugeMetricFamily("opsq_approval_oldest_pending_age_seconds", "How long the oldest approval waiting for a "
                            "decision has waited (0 when none)")
    age.add_metric([], 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - as_utc(oldest)).total_seconds()))
    compensations = GaugeMetricFamily("opsq_compensations", "Compensations (undo of a completed step) in the store, "
                                      "by status", labels=["status"])
    for comp_status in CompensationStatus:
        compensations.add_metric([comp_status.value], float(comps.get(comp_status.value, 0)))
    return [workflows, pending, age, compensations]
