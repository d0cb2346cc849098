"""re-identification requests and their sealed answers; decisions' lawful basis and rationale

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_reid_request",
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("notification_id", sa.String(32), sa.ForeignKey("inbox_alert.notification_id"),
                  nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("hub_id", sa.String(64), nullable=False),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("reid_handles", sa.String(2048), nullable=False),
        sa.Column("lawful_basis", sa.String(40), nullable=False),
        sa.Column("basis_reason", sa.String(500), nullable=True),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("user_ref", sa.String(64), nullable=False),
        sa.Column("requested_at", sa.BigInteger, nullable=False),
        sa.Column("published_at", sa.BigInteger, nullable=True),
        sa.Column("request_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("response_id", sa.String(32), nullable=True),
        sa.Column("decline_reason", sa.String(40), nullable=True),
        sa.Column("responder_ref", sa.String(64), nullable=True),
        sa.Column("answered_at", sa.BigInteger, nullable=True),
        sa.Column("sealed_identity", sa.LargeBinary, nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("kept_by", sa.String(64), nullable=True),
        sa.Column("kept_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_inbox_reid_request_notification_id", "inbox_reid_request",
                    ["notification_id"])
    op.create_index("ix_inbox_reid_request_published_at", "inbox_reid_request",
                    ["published_at"])
    op.create_index("ix_inbox_reid_request_expires_at", "inbox_reid_request", ["expires_at"])
    op.create_table(
        "inbox_reid_view",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(32), sa.ForeignKey("inbox_reid_request.request_id"),
                  nullable=False),
        sa.Column("user_ref", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_inbox_reid_view_request_id", "inbox_reid_view", ["request_id"])
    with op.batch_alter_table("inbox_ack") as batch:
        batch.add_column(sa.Column("lawful_basis", sa.String(40), nullable=True))
        batch.add_column(sa.Column("rationale", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_ack") as batch:
        batch.drop_column("rationale")
        batch.drop_column("lawful_basis")
    op.drop_table("inbox_reid_view")
    op.drop_table("inbox_reid_request")
