"""action_runs.workflow_id and fail_fast; a real `skipped` status

The runtime tells a workflow's step from a standalone action without reading the workflows' tables; the
stuck detector re-sends what submit sent (fail_fast included); a step that never ran is `skipped`, no
longer `failed` with error_kind `skipped`.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.add_column(sa.Column("workflow_id", sa.String(32), nullable=True))
        # Kept with the record so the stuck detector's re-send is the message submit sent.
        batch.add_column(sa.Column("fail_fast", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.create_index("ix_action_runs_workflow_id", ["workflow_id"])
    convert_rows(op.execute)


def convert_rows(execute: Callable[[str], object]) -> None:
    """This migration's data conversion, on its own: a backup taken before it is restored into the newest
    schema and then converted by the same statements (beat.backup.restore). Idempotent."""
    execute("UPDATE action_runs SET workflow_id = (SELECT s.workflow_id FROM workflow_steps s "
            "WHERE s.action_id = action_runs.id) "
            "WHERE workflow_id IS NULL AND id IN (SELECT action_id FROM workflow_steps)")
    execute("UPDATE action_runs SET status = 'skipped', error_kind = NULL "
            "WHERE status = 'failed' AND error_kind = 'skipped'")


def downgrade() -> None:
    op.execute("UPDATE action_runs SET status = 'failed', error_kind = 'skipped' WHERE status = 'skipped'")
    with op.batch_alter_table("action_runs") as batch:
        batch.drop_index("ix_action_runs_workflow_id")
        batch.drop_column("fail_fast")
        batch.drop_column("workflow_id")
