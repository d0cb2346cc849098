"""vault: Alembic's version table replaces the vault's own schema_version row

Revision ID: vault0002
Revises: vault0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "vault0002"
down_revision = "vault0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("vault_meta")


def downgrade() -> None:
    meta = op.create_table(
        "vault_meta",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.bulk_insert(meta, [{"name": "schema_version", "value": 1}])
