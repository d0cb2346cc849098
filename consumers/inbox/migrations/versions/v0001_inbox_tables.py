"""inbox tables: alerts, evidence, re-identification handles, acks (outbox)

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_alert",
        sa.Column("notification_id", sa.String(32), primary_key=True),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("cluster_id", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("raised_at", sa.BigInteger, nullable=False),
        sa.Column("age_years", sa.Integer, nullable=False),
        sa.Column("local_authority", sa.String(9), nullable=False),
        sa.Column("placing_authority", sa.String(9)),
        sa.Column("lead_authority", sa.String(9)),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("ack_deadline", sa.BigInteger, nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=False),
        sa.Column("agencies", sa.String(1024), nullable=False),
        sa.Column("identity_conflict", sa.Boolean, nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(40)),
        sa.Column("acknowledged_at", sa.BigInteger),
        sa.Column("decided_at", sa.BigInteger),
    )
    op.create_index("ix_inbox_alert_alert_id", "inbox_alert", ["alert_id"])
    op.create_index("ix_inbox_alert_queue", "inbox_alert", ["agency_id", "status", "raised_at"])
    op.create_table(
        "inbox_evidence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.String(32),
                  sa.ForeignKey("inbox_alert.notification_id"), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("sector", sa.String(32), nullable=False),
        sa.Column("indicator", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
    )
    op.create_index("ix_inbox_evidence_notification_id", "inbox_evidence", ["notification_id"])
    op.create_table(
        "inbox_reidentification",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.String(32),
                  sa.ForeignKey("inbox_alert.notification_id"), nullable=False),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("reid_handle", sa.String(32), nullable=False),
    )
    op.create_index("ix_inbox_reidentification_notification_id", "inbox_reidentification",
                    ["notification_id"])
    op.create_table(
        "inbox_ack",
        sa.Column("ack_id", sa.String(32), primary_key=True),
        sa.Column("notification_id", sa.String(32),
                  sa.ForeignKey("inbox_alert.notification_id"), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("user_ref", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(40)),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("published_at", sa.BigInteger),
    )
    op.create_index("ix_inbox_ack_notification_id", "inbox_ack", ["notification_id"])
    op.create_index("ix_inbox_ack_published_at", "inbox_ack", ["published_at"])


def downgrade() -> None:
    op.drop_table("inbox_ack")
    op.drop_table("inbox_reidentification")
    op.drop_table("inbox_evidence")
    op.drop_table("inbox_alert")
