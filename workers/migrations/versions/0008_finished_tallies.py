"""finished_tallies: the finished actions whose records the retention clean-up deleted

The count of finished actions (what `opsq metrics`, beat's success-rate alert and the exporter's
`opsq_actions_finished` read, issue 13) is the records' count plus this tally, so it does not drop when
old records are deleted.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "finished_tallies",
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("action", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        sa.Column("error_kind", sa.String(32), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("finished_tallies")
