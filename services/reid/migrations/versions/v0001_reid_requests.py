"""re-identification requests an agency received and the decisions on them

The schema `RequestStore.open` made with `create_all` before the store had migrations (with
its own schema_version row), so a store created then is recognised: nothing is created twice
and the revision is recorded. The table definitions are frozen here on purpose.

Revision ID: reid0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from safehub.errors import StoreError

revision = "reid0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "reid_agency_meta", metadata,
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    sa.Table(
        "reid_agency_requests", metadata,
        sa.Column("agency_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("hub_id", sa.String(64), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("request", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("outcome", sa.String(32)),
        sa.Column("decline_reason", sa.String(64)),
        sa.Column("officer", sa.String(64)),
        sa.Column("decided_at", sa.BigInteger),
        sa.Column("response_id", sa.String(32)),
    )
    return metadata


def upgrade() -> None:
    metadata = _tables()
    bind = op.get_bind()
    metadata.create_all(bind, checkfirst=True)
    meta = metadata.tables["reid_agency_meta"]
    known = bind.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).first()
    if known is None:
        op.execute(meta.insert().values(name="schema_version", value=1))
    elif known[0] != 1:
        raise StoreError(f"re-identification store schema version {known[0]} is not one "
                           f"this code knows")


def downgrade() -> None:
    _tables().drop_all(op.get_bind())
