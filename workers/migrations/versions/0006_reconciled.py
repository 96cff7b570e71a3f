"""action_runs.reconciled: the action's effect was found on the platform after its answer was lost

An attempt whose answer was lost (a read timeout, a connection closed after the request, a 502/504, a worker
that died during the call) makes the next one look the effect up by its effect key before calling; when it
was found, the action succeeded without a second call, and `opsq action status` says so.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite has it, with a constant default), not batch mode: batch mode would rebuild
    # action_runs on SQLite, which dead_letters' foreign key refuses while any dead letter exists.
    op.add_column("action_runs", sa.Column("reconciled", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.drop_column("reconciled")
