"""router state: one row per correlated alert it has seen

Revision ID: r0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_alert",
        sa.Column("alert_id", sa.String(32), primary_key=True),
        sa.Column("cluster_id", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("receiver", sa.String(64), nullable=False),
        sa.Column("escalation", sa.String(64), nullable=False),
        sa.Column("lead_authority", sa.String(9)),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("urgent", sa.Boolean, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("sent_at", sa.BigInteger),
        sa.Column("deadline", sa.BigInteger),
    )
    op.create_index("ix_router_alert_cluster_id", "router_alert", ["cluster_id"])


def downgrade() -> None:
    op.drop_table("router_alert")
