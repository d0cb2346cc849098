"""The audit ledger on PostgreSQL: append-only triggers, leaf order, checkpoints."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from safehub.errors import StoreError
from safehub.services.audit.ledger import (
    Ledger,
    NewEntry,
    StoredCheckpoint,
    create_schema,
    open_engine,
)
from safehub.services.audit.merkle import leaf_hash

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_schema_url(postgres_url: str) -> str:
    """A throw-away schema so parallel runs never share tables."""
    schema = "audit_" + uuid.uuid4().hex[:8]
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    sep = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{sep}options=-csearch_path%3D{schema}"


def test_ledger_is_append_only_on_postgres(pg_schema_url: str) -> None:
    engine = open_engine(pg_schema_url)
    create_schema(engine)
    create_schema(engine)  # idempotent, triggers included
    ledger = Ledger(engine)
    rows = [NewEntry(i, f"{i:032x}", "web", "ALERT_VIEWED", f"{i:032x}", i, b"e%d" % i,
                     leaf_hash(b"e%d" % i)) for i in range(5)]
    ledger.append(0, rows)
    ledger.add_checkpoint(StoredCheckpoint(5, bytes(32), "note", 1))
    assert ledger.size() == 5 and ledger.next_offset() == 5
    assert [e.raw for e in ledger.entries()] == [r.raw for r in rows]
    assert ledger.leaf_hashes() == [r.leaf_hash for r in rows]
    for statement in ("UPDATE audit_entries SET raw = 'x' WHERE seq = 1",
                      "DELETE FROM audit_entries WHERE seq = 1",
                      "DELETE FROM audit_checkpoints"):
        with pytest.raises(SQLAlchemyError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with pytest.raises(StoreError):  # a leaf index can never be written twice
        ledger.append(4, rows[:1])
    engine.dispose()
