"""The audit ledger's contract, on SQLite and PostgreSQL alike: append-only for the
application, leaf order, checkpoints, and `verify` naming every kind of tampering.

Tampering is done the way an insider with the database owner's rights would: drop the
append-only triggers and edit rows. The log here is what the sink would have stored from the
audit topic (25 entries and one record that is not an entry), with checkpoints signed at 10,
20 and 26 leaves; the same records stand for the topic. The sink and `safehub audit verify`
against a real broker are tested in tests/integration/test_audit_log.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from nacl.signing import SigningKey
from sqlalchemy.exc import SQLAlchemyError

from safehub.errors import StoreError
from safehub.schemas.codec import encode
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.checkpoint import TreeHead, sign
from safehub.services.audit.journal import make_entry
from safehub.services.audit.ledger import (
    Ledger,
    NewEntry,
    StoredCheckpoint,
    migrate,
    open_engine,
)
from safehub.services.audit.merkle import MerkleTree, leaf_hash
from safehub.services.audit.verify import TopicRecord, summary, verify_log

pytestmark = pytest.mark.integration

KEY = SigningKey(hashlib.sha256(b"contract audit key").digest())
ORIGIN = "safehub.test/audit"
ENTRIES = 25
GUARDED = ("audit_entries", "audit_checkpoints")


@dataclass
class Log:
    engine: sa.Engine
    ledger: Ledger
    topic: list[TopicRecord]

    def verify(self, *, with_topic: bool = True) -> tuple[bool, str]:
        report = verify_log(list(self.ledger.entries()),
                            [c.note for c in self.ledger.checkpoints()],
                            self.topic if with_topic else None, KEY.verify_key)
        return report.ok, summary(report)

    def tamper(self, *statements: str, **params: object) -> None:
        """Drop the guards as the owner would, then run the statements in one transaction."""
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.begin() as conn:
            for t in GUARDED:
                for op in ("update", "delete"):
                    if sqlite:
                        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {t}_no_{op}"))
                if not sqlite:
                    conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}"))
            for statement in statements:
                conn.execute(sa.text(statement), params)


def records() -> list[bytes]:
    entries = [encode(make_entry("correlator", AuditAction.EVENT_ACCEPTED, f"{i:032x}",
                                 "police-test", hashlib.sha256(str(i).encode()).digest(),
                                 1_700_000_000_000 + i)) for i in range(ENTRIES)]
    return [*entries, b"not avro"]  # stored as a leaf too: the log must match the topic


@pytest.fixture
def log(store_url: str) -> Iterator[Log]:
    engine = open_engine(store_url)
    migrate(engine)
    ledger = Ledger(engine)
    raws = records()
    ledger.append(0, [NewEntry(i, None, None, None, None, None, raw, leaf_hash(raw))
                      for i, raw in enumerate(raws)])
    tree = MerkleTree(leaf_hash(r) for r in raws)
    for size in (10, 20, len(raws)):
        signed = sign(TreeHead(ORIGIN, size, tree.root(size)), KEY)
        ledger.add_checkpoint(StoredCheckpoint(size, signed.head.root, signed.note(), size))
    yield Log(engine, ledger, [TopicRecord(i, raw, None) for i, raw in enumerate(raws)])
    engine.dispose()


def test_an_intact_log_verifies(log: Log) -> None:
    ok, out = log.verify()
    assert ok, out
    assert [c.tree_size for c in log.ledger.checkpoints()] == [10, 20, ENTRIES + 1]
    assert log.ledger.size() == ENTRIES + 1 and log.ledger.next_offset() == ENTRIES + 1
    assert [e.raw for e in log.ledger.entries(batch=7)] == records()
    assert log.ledger.leaf_hashes() == [leaf_hash(r) for r in records()]


@pytest.mark.parametrize("statement", [
    "UPDATE audit_entries SET topic_offset = 99 WHERE seq = 1",
    "DELETE FROM audit_entries WHERE seq = 1",
    "UPDATE audit_checkpoints SET note = 'x'",
    "DELETE FROM audit_checkpoints",
])
def test_the_application_can_only_append(log: Log, statement: str) -> None:
    with pytest.raises(SQLAlchemyError, match="append-only"), log.engine.begin() as conn:
        conn.execute(sa.text(statement))
    assert log.verify()[0]


def test_a_leaf_index_is_written_once(log: Log) -> None:
    with pytest.raises(StoreError):
        log.ledger.append(4, [NewEntry(999, None, None, None, None, None, b"x", leaf_hash(b"x"))])


def test_migrating_again_keeps_the_log_and_its_guards(log: Log) -> None:
    migrate(log.engine)
    assert log.verify()[0]
    with pytest.raises(SQLAlchemyError, match="append-only"), log.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entries"))


def test_a_changed_entry_is_named(log: Log) -> None:
    changed = records()[7][:-1] + b"\x01"
    log.tamper("UPDATE audit_entries SET raw = :raw, leaf_hash = :h WHERE seq = 7",
               raw=changed, h=bytes(32))
    ok, out = log.verify()
    assert not ok
    assert "[changed] stored row 7" in out
    assert "signed root of size 10" in out
    ok, out = log.verify(with_topic=False)  # checkpoints alone narrow it to an interval
    assert not ok and "between 0 and 9" in out


def test_a_removed_entry_is_named(log: Log) -> None:
    # Two steps, so no row ever collides with another's number whatever order rows move in.
    log.tamper("DELETE FROM audit_entries WHERE seq = 12",
               "UPDATE audit_entries SET seq = seq + 1000 WHERE seq > 12",
               "UPDATE audit_entries SET seq = seq - 1001 WHERE seq >= 1000")
    ok, out = log.verify()
    assert not ok
    assert "[removed] the record at offset 12 is missing" in out


def test_swapped_entries_are_named(log: Log) -> None:
    raws = records()
    log.tamper("UPDATE audit_entries SET raw = :r4, leaf_hash = :h4 WHERE seq = 3",
               "UPDATE audit_entries SET raw = :r3, leaf_hash = :h3 WHERE seq = 4",
               r3=raws[3], h3=leaf_hash(raws[3]), r4=raws[4], h4=leaf_hash(raws[4]))
    ok, out = log.verify()
    assert not ok
    assert "[reordered]" in out
    assert "stored row 3 holds the record of offset 4" in out
    assert "stored row 4 holds the record of offset 3" in out


def test_an_inserted_entry_is_named(log: Log) -> None:
    log.tamper("UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 5",
               "UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000",
               "INSERT INTO audit_entries (seq, topic_offset, raw, leaf_hash) "
               "VALUES (5, 100000, :raw, :h)", raw=b"\x00", h=b"\x11" * 32)
    ok, out = log.verify()
    assert not ok
    assert "[inserted] stored row 5" in out


def test_a_bad_signature_and_a_fork_are_named(log: Log) -> None:
    note = log.ledger.checkpoints()[0].note
    blob = note.rstrip("\n").split("\n")[-1].split(" ")[-1]
    bad = note.replace(blob, blob[:-4] + ("AAA=" if not blob.endswith("AAA=") else "BBB="))
    forked = sign(TreeHead(ORIGIN, 10, hashlib.sha256(b"other").digest()), KEY).note()
    insert = ("INSERT INTO audit_checkpoints (tree_size, root_hash, note, signed_at_ms) "
              "VALUES (10, :root, :note, 0)")
    # Appending is allowed: a forged checkpoint needs no dropped guard.
    for text in (bad, forked):
        with log.engine.begin() as conn:
            conn.execute(sa.text(insert), {"root": bytes(32), "note": text})
    ok, out = log.verify()
    assert not ok
    assert "[bad-signature]" in out
    assert "[forked] 2 different signed roots for tree size 10" in out
