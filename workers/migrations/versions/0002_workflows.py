"""workflow runs, steps, compensations, approvals, events

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("input", JSONType, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("failed_step", sa.String(100), nullable=True),
        sa.Column("resume_level", sa.Integer, nullable=False),
        sa.Column("resolution_note", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(100), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_workflow_runs_status", "workflow_runs", ["status"])
    op.create_table(
        "workflow_steps",
        sa.Column("workflow_id", sa.String(32), sa.ForeignKey("workflow_runs.id"), primary_key=True),
        sa.Column("step_id", sa.String(100), primary_key=True),
        sa.Column("action_id", sa.String(32), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", JSONType, nullable=True),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("completed_seq", sa.Integer, nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_workflow_steps_action_id", "workflow_steps", ["action_id"])
    op.create_table(
        "compensations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.String(32), sa.ForeignKey("workflow_runs.id"), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_compensations_workflow_id", "compensations", ["workflow_id"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workflow_id", sa.String(32), sa.ForeignKey("workflow_runs.id"), nullable=False),
        sa.Column("step_ids", JSONType, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("requested_by", sa.String(100), nullable=True),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("decided_by", sa.String(100), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_approvals_workflow_id", "approvals", ["workflow_id"])
    op.create_index("ix_approvals_status", "approvals", ["status"])
    op.create_table(
        "workflow_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.String(32), sa.ForeignKey("workflow_runs.id"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_workflow_events_workflow_id", "workflow_events", ["workflow_id"])


def downgrade() -> None:
    for table in ("workflow_events", "approvals", "compensations", "workflow_steps", "workflow_runs"):
        op.drop_table(table)
