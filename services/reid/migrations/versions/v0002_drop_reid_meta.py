"""re-identification store: Alembic's version table replaces its own schema_version row

Revision ID: reid0002
Revises: reid0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "reid0002"
down_revision = "reid0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("reid_agency_meta")


def downgrade() -> None:
    meta = op.create_table(
        "reid_agency_meta",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.bulk_insert(meta, [{"name": "schema_version", "value": 1}])
