"""Cancel, schedule, deadline (issue 14): scheduled_for and expires_at on action_runs and workflow_runs

`scheduled` actions are found by (status, scheduled_for) every second by the beat leader
(workers.scheduling), hence the index. Statuses are strings: `scheduled`, `cancelled`, `expired`,
`cancelling` need no change to the schema.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on SQLite too, no table rebuild.
    op.add_column("action_runs", sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
    op.add_column("action_runs", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_action_runs_status_scheduled", "action_runs", ["status", "scheduled_for"])
    op.add_column("workflow_runs", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("workflow_runs", sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_index("ix_action_runs_status_scheduled", table_name="action_runs")
    with op.batch_alter_table("action_runs") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("scheduled_for")
    with op.batch_alter_table("workflow_runs") as batch:
        batch.drop_column("scheduled_for")
        batch.drop_column("expires_at")
