"""the codes agencies gave where they disagree about a child's placing or local authority

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_alert") as batch:
        batch.add_column(sa.Column("authority_conflict", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_alert") as batch:
        batch.drop_column("authority_conflict")
