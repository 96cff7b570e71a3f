"""An API token's owner: the person it acts for (`opsq api token create NAME --role R --owner dana`)

An approval policy's self-approval rule compares persons, not actor names: a workflow submitted over the API as
`api:dana-bot` (owned by dana) may not be approved by dana in Slack or on the CLI, nor the reverse
(workflows.client.check_decider). Null for the tokens made before, and for a token no person owns: it is then
its own person, `api:<name>`.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("owner", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("owner")
