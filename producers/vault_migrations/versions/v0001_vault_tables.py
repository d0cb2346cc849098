"""vault: one random handle per child per agency, and the records published about each

The schema `Vault.open` made with `create_all` before the vault had migrations (with its own
schema_version row), so a vault created then is recognised: nothing is created twice and the
revision is recorded. The table definitions are frozen here on purpose.

Revision ID: vault0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from safehub.errors import StoreError

revision = "vault0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "vault_meta", metadata,
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    sa.Table(
        "vault_children", metadata,
        sa.Column("reid_handle", sa.String(32), primary_key=True),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(256), nullable=False),
        sa.UniqueConstraint("agency_id", "person_key", name="uq_vault_children_person"),
    )
    sa.Table(
        "vault_records", metadata,
        sa.Column("agency_id", sa.String(64), primary_key=True),
        sa.Column("record_ref", sa.String(256), primary_key=True),
        sa.Column("reid_handle", sa.String(32), sa.ForeignKey("vault_children.reid_handle"),
                  nullable=False, index=True),
        sa.Column("event_id", sa.String(32), nullable=False),
    )
    return metadata


def upgrade() -> None:
    metadata = _tables()
    bind = op.get_bind()
    metadata.create_all(bind, checkfirst=True)
    meta = metadata.tables["vault_meta"]
    known = bind.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).first()
    if known is None:
        op.execute(meta.insert().values(name="schema_version", value=1))
    elif known[0] != 1:
        raise StoreError(f"vault schema version {known[0]} is not one this code knows")


def downgrade() -> None:
    _tables().drop_all(op.get_bind())
