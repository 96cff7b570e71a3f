"""The HTTP API (issue 15): its tokens, which token submitted which action, and approval votes

`api_tokens` keeps a SHA-256 of each token's secret, never the secret: a copy of the database does not let
anyone call the API. `api_actions` records the token that submitted an action, so a `submit` token reads
its own actions only (action_runs has no submitter column, and adding one would widen the submit hot path
for every client, not only the API's). `approval_votes` holds each distinct approver's approval of a gate
whose policy needs several (N-of-M).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "api_actions",
        sa.Column("action_id", sa.String(32), primary_key=True),
        sa.Column("token_name", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "approval_votes",
        sa.Column("approval_id", sa.String(32), sa.ForeignKey("approvals.id"), primary_key=True),
        sa.Column("actor", sa.String(100), primary_key=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("approval_votes")
    op.drop_table("api_actions")
    op.drop_table("api_tokens")
