"""Databases made before the ledger, the vault and the re-identification store had
migrations (by `create_all`) are recognised by the new code: their rows stay, they are recorded
at the newest revision, nothing is recreated.

The old schemas are copied here as fixed SQL, as the old code's `create_all` emitted them, so
this test keeps meaning the same thing when the models change.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from safehub.errors import StoreError
from safehub.producers.vault import MIGRATIONS as VAULT
from safehub.producers.vault import Assignment, Vault
from safehub.schemas.vocabulary import ReidOutcome
from safehub.services.audit.ledger import MIGRATIONS as LEDGER
from safehub.services.audit.ledger import Ledger, NewEntry, migrate
from safehub.services.audit.merkle import leaf_hash
from safehub.services.reid.store import MIGRATIONS as REID
from safehub.services.reid.store import RequestStore
from safehub.storage import Migrations, open_engine

pytestmark = pytest.mark.integration

OLD_LEDGER = """
CREATE TABLE audit_checkpoints (
    id {serial} NOT NULL, tree_size BIGINT NOT NULL, root_hash {blob} NOT NULL,
    note TEXT NOT NULL, signed_at_ms BIGINT NOT NULL, PRIMARY KEY (id));
CREATE TABLE audit_entries (
    seq BIGINT NOT NULL, topic_offset BIGINT NOT NULL, entry_id VARCHAR(32),
    service VARCHAR(64), action VARCHAR(64), subject_id VARCHAR(32), at_ms BIGINT,
    raw {blob} NOT NULL, leaf_hash {blob} NOT NULL, PRIMARY KEY (seq), UNIQUE (topic_offset));
"""
OLD_LEDGER_GUARDS = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
        f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END"
        for t in ("audit_entries", "audit_checkpoints") for op in ("UPDATE", "DELETE")],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$",
        *[f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
          f"FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
          for t in ("audit_entries", "audit_checkpoints")]],
}
OLD_VAULT = """
CREATE TABLE vault_children (
    reid_handle VARCHAR(32) NOT NULL, agency_id VARCHAR(64) NOT NULL,
    person_key VARCHAR(256) NOT NULL, PRIMARY KEY (reid_handle),
    CONSTRAINT uq_vault_children_person UNIQUE (agency_id, person_key));
CREATE TABLE vault_meta (name VARCHAR(32) NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (name));
CREATE TABLE vault_records (
    agency_id VARCHAR(64) NOT NULL, record_ref VARCHAR(256) NOT NULL,
    reid_handle VARCHAR(32) NOT NULL, event_id VARCHAR(32) NOT NULL,
    PRIMARY KEY (agency_id, record_ref),
    FOREIGN KEY(reid_handle) REFERENCES vault_children (reid_handle));
CREATE INDEX ix_vault_records_reid_handle ON vault_records (reid_handle);
INSERT INTO vault_meta (name, value) VALUES ('schema_version', 1);
"""
OLD_REID = """
CREATE TABLE reid_agency_meta (
    name VARCHAR(32) NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (name));
CREATE TABLE reid_agency_requests (
    agency_id VARCHAR(64) NOT NULL, request_id VARCHAR(32) NOT NULL, hub_id VARCHAR(64) NOT NULL,
    alert_id VARCHAR(32) NOT NULL, received_at BIGINT NOT NULL, request {blob} NOT NULL,
    status VARCHAR(16) NOT NULL, outcome VARCHAR(32), decline_reason VARCHAR(64),
    officer VARCHAR(64), decided_at BIGINT, response_id VARCHAR(32),
    PRIMARY KEY (agency_id, request_id));
CREATE INDEX ix_reid_agency_requests_status ON reid_agency_requests (status);
INSERT INTO reid_agency_meta (name, value) VALUES ('schema_version', 1);
"""


def run_script(engine: sa.Engine, script: str, *extra: str) -> None:
    blob = "BLOB" if engine.dialect.name == "sqlite" else "BYTEA"
    serial = "INTEGER" if engine.dialect.name == "sqlite" else "SERIAL"
    statements = [s for s in script.format(blob=blob, serial=serial).split(";") if s.strip()]
    with engine.begin() as conn:
        for statement in [*statements, *extra]:
            conn.execute(sa.text(statement))


def recorded_at_head(engine: sa.Engine, migrations: Migrations) -> bool:
    (head,) = ScriptDirectory.from_config(migrations.config()).get_heads()
    with engine.connect() as conn:
        version = conn.execute(sa.text(f"SELECT version_num FROM {migrations.version_table}"))
        return bool(version.scalar_one() == head)


def test_an_old_ledger_keeps_its_rows_and_its_guards(store_url: str) -> None:
    engine = open_engine(store_url)
    run_script(engine, OLD_LEDGER, *OLD_LEDGER_GUARDS[engine.dialect.name])
    with engine.begin() as conn:
        for i in range(3):
            conn.execute(sa.text("INSERT INTO audit_entries (seq, topic_offset, raw, leaf_hash) "
                                 "VALUES (:s, :s, :raw, :h)"),
                         {"s": i, "raw": b"e%d" % i, "h": leaf_hash(b"e%d" % i)})
        conn.execute(sa.text("INSERT INTO audit_checkpoints (tree_size, root_hash, note, "
                             "signed_at_ms) VALUES (3, :r, 'old note', 1)"), {"r": bytes(32)})
    migrate(engine)
    assert recorded_at_head(engine, LEDGER)
    ledger = Ledger(engine)
    assert [e.raw for e in ledger.entries()] == [b"e0", b"e1", b"e2"]
    assert [c.note for c in ledger.checkpoints()] == ["old note"]
    # The guards are the old ones, not doubled: the application still cannot change a row.
    with pytest.raises(SQLAlchemyError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entries WHERE seq = 0"))
    ledger.append(3, [NewEntry(3, None, None, None, None, None, b"e3", leaf_hash(b"e3"))])
    assert ledger.next_offset() == 4
    engine.dispose()


def test_an_old_vault_keeps_its_handles(store_url: str) -> None:
    engine = open_engine(store_url)
    run_script(engine, OLD_VAULT)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO vault_children VALUES (:h, 'police-wy', 'ref:N-1')"),
                     {"h": "a" * 32})
        conn.execute(sa.text("INSERT INTO vault_records VALUES ('police-wy', 'INC-1', :h, :e)"),
                     {"h": "a" * 32, "e": "e" * 32})
    engine.dispose()
    vault = Vault.open(store_url)
    assert recorded_at_head(vault.engine, VAULT)
    assert "vault_meta" not in sa.inspect(vault.engine).get_table_names()
    found = vault.resolve("police-wy", "a" * 32)
    assert found is not None and found.person_ref == "N-1" and found.record_refs == ("INC-1",)
    # The old handle is reused for the same child, as before the upgrade.
    assert vault.assign("police-wy", [Assignment("ref:N-1", "INC-2", "f" * 32)]) == ["a" * 32]
    vault.close()
    Vault.open(store_url).close()  # and opening it again changes nothing


def test_an_old_vault_of_an_unknown_version_is_refused(store_url: str) -> None:
    engine = open_engine(store_url)
    run_script(engine, OLD_VAULT, "UPDATE vault_meta SET value = 2")
    engine.dispose()
    with pytest.raises(StoreError, match="schema version 2"):
        Vault.open(store_url)


def test_an_old_request_store_keeps_its_requests(store_url: str) -> None:
    engine = open_engine(store_url)
    run_script(engine, OLD_REID)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO reid_agency_requests (agency_id, request_id, hub_id, alert_id, "
            "received_at, request, status) VALUES ('police-wy', :r, 'csc-leeds', :a, 5, :b, "
            "'PENDING')"), {"r": "b" * 32, "a": "c" * 32, "b": b"contract bytes"})
    engine.dispose()
    store = RequestStore.open(store_url)
    assert recorded_at_head(store.engine, REID)
    assert "reid_agency_meta" not in sa.inspect(store.engine).get_table_names()
    assert store.mark_decided("police-wy", "b" * 32, ReidOutcome.APPROVED, None, "officer-1",
                              9, "d" * 32)
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, received_at, request FROM "
                                   "reid_agency_requests")).one()
    assert (row[0], row[1], bytes(row[2])) == ("DECIDED", 5, b"contract bytes")
    store.close()
