"""workflow_steps (workflow_id, completed_seq): numbering a step's success reads one index entry

Each step's success takes MAX(completed_seq) + 1 among its workflow's steps (the order the rollback undoes
them in). Without an index that MAX walked every step of the workflow, so each step of a long chain cost
more than the one before (issue 10); with it, the database reads the last entry of the workflow's range.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain CREATE INDEX (SQLite has it), not batch mode: nothing here needs the table rebuilt.
    op.create_index("ix_workflow_steps_completed_seq", "workflow_steps", ["workflow_id", "completed_seq"])


def downgrade() -> None:
    op.drop_index("ix_workflow_steps_completed_seq", table_name="workflow_steps")
