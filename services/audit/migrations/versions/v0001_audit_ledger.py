"""audit ledger: append-only entries (the Merkle leaves) and signed checkpoints

The schema that `create_schema` made with `create_all` before the ledger had migrations, so a
ledger created then is recognised: its tables and guards exist, nothing is created twice, and
the revision is recorded. The table definitions are frozen here on purpose; later changes are
later revisions.

Revision ID: audit0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit0001"
down_revision = None
branch_labels = None
depends_on = None

_TABLES = ("audit_entries", "audit_checkpoints")


def _tables() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "audit_entries", metadata,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("topic_offset", sa.BigInteger, nullable=False, unique=True),
        sa.Column("entry_id", sa.String(32), nullable=True),
        sa.Column("service", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=True),
        sa.Column("subject_id", sa.String(32), nullable=True),
        sa.Column("at_ms", sa.BigInteger, nullable=True),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    )
    sa.Table(
        "audit_checkpoints", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signed_at_ms", sa.BigInteger, nullable=False),
    )
    return metadata


# The application may only append; UPDATE and DELETE abort. Both forms are idempotent, so a
# ledger whose guards already exist keeps them unchanged.
_SQLITE_GUARDS = [
    f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op_.lower()} BEFORE {op_} ON {t} "
    f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END"
    for t in _TABLES for op_ in ("UPDATE", "DELETE")
]
_PG_GUARDS = [
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$",
    *[
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{t}_append_only'"
        f" AND tgrelid = '{t}'::regclass)"
        f" THEN CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
        f"FOR EACH ROW EXECUTE FUNCTION audit_append_only(); END IF; END $$"
        for t in _TABLES
    ],
]


def upgrade() -> None:
    bind = op.get_bind()
    _tables().create_all(bind, checkfirst=True)
    for statement in _SQLITE_GUARDS if bind.dialect.name == "sqlite" else _PG_GUARDS:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for t in _TABLES:
            for op_ in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {t}_no_{op_}")
    _tables().drop_all(bind)
    if bind.dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
