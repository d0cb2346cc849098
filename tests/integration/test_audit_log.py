"""The audit sink and `safehub audit verify` against the real broker and a real SQLite file.

Tampering is done the way an insider with the database owner's rights would: drop the
append-only triggers and edit rows. Verify must fail and name the entry. Every other kind of
tampering (removed, reordered, inserted entries, bad signatures, forks) is named by the ledger's
contract suite (tests/contract/test_ledger.py) on SQLite and PostgreSQL, without a broker.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from safehub.bus import make_producer, send_and_confirm
from safehub.cli import main
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.journal import AuditJournal
from safehub.services.audit.ledger import Ledger, create_schema, open_engine
from safehub.services.audit.sink import AuditSink, SinkSettings, open_sink
from tests.conftest import Namespace
from tests.fixtures.audit import auditor_env

pytestmark = pytest.mark.integration

KEY = SigningKey(hashlib.sha256(b"integration audit key").digest())
PUBLIC = bytes(KEY.verify_key).hex()
ENTRIES = 25


@dataclass
class Log:
    db: Path
    prefix: str
    sink: AuditSink
    ns: Namespace


def _drain(sink: AuditSink, want: int) -> None:
    for _ in range(60):
        if sink.size >= want:
            return
        sink.poll_once(timeout_ms=500)
    raise AssertionError(f"sink stored {sink.size} of {want}")


@pytest.fixture
def audit_log(secure_namespace: Callable[..., Namespace], tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Log]:
    ns = secure_namespace(agencies={"police-test": "POLICE"}, hubs=["csc-test"])
    prefix = ns.prefix
    auditor_env(ns, monkeypatch)
    # The entries come from the correlator, as its own principal.
    producer = make_producer(ns.connection("correlator"), "test-audit")
    journal = AuditJournal(producer, prefix + "audit", "correlator")
    for i in range(ENTRIES):
        journal.record(AuditAction.EVENT_ACCEPTED, f"{i:032x}", "police-test",
                       hashlib.sha256(str(i).encode()).digest(), 1_700_000_000_000 + i)
    journal.flush()
    # One record that is not an audit entry: stored as a leaf (the log must match the topic)
    # and dead-lettered with its reason.
    send_and_confirm(producer, prefix + "audit", b"not avro")
    db = tmp_path / "audit.db"
    settings = SinkSettings(ns.connection("audit-sink"), prefix + "audit", prefix + "deadletter",
                            f"sqlite:///{db}", "safehub.test/audit", None, 10, 3_600_000)
    sink = open_sink(settings, KEY)
    _drain(sink, ENTRIES + 1)
    sink.checkpoint()
    _drain(sink, ENTRIES + 1 + 3)  # checkpoints at 10, 20 and the final one come back as leaves
    yield Log(db, prefix, sink, ns)
    producer.close()


def _verify(db: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--db", f"sqlite:///{db}", "--public-key", PUBLIC, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _tampered(log: Log, tmp_path: Path, *sql: str) -> Path:
    copy = tmp_path / f"tampered-{hashlib.sha256(''.join(sql).encode()).hexdigest()[:8]}.db"
    src = sqlite3.connect(log.db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    for t in ("audit_entries", "audit_checkpoints"):
        for op in ("update", "delete"):
            dst.execute(f"DROP TRIGGER {t}_no_{op}")
    for statement in sql:
        dst.execute(statement)
    dst.commit()
    dst.execute("PRAGMA journal_mode=DELETE")  # a lone copy: no WAL files beside it
    dst.close()
    return copy


def test_intact_log_verifies(audit_log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _verify(audit_log.db, capsys)
    assert code == 0, out
    assert "OK" in out
    ledger = Ledger(open_engine(f"sqlite:///{audit_log.db}", read_only=True))
    sizes = [c.tree_size for c in ledger.checkpoints()]
    assert sizes == [10, 20, ENTRIES + 1]
    stored = list(ledger.entries())
    assert stored[ENTRIES].entry_id is None and stored[ENTRIES].raw == b"not avro"


def test_store_refuses_updates_and_deletes(audit_log: Log) -> None:
    conn = sqlite3.connect(audit_log.db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_entries SET raw = x'00' WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_checkpoints")
    conn.close()


def test_changed_entry_is_named(audit_log: Log, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    db = _tampered(audit_log, tmp_path,
                   "UPDATE audit_entries SET "
                   "raw = CAST(substr(raw, 1, length(raw) - 1) || x'01' AS BLOB), "
                   "leaf_hash = x'" + "00" * 32 + "' WHERE seq = 7")
    code, out = _verify(db, capsys)
    assert code == 1
    assert "[changed] stored row 7" in out
    assert "signed root of size 10" in out
    code, out = _verify(db, capsys, "--no-topic")
    assert code == 1 and "between 0 and 9" in out  # checkpoints alone narrow it to an interval


def test_schema_creation_is_idempotent(audit_log: Log) -> None:
    engine = open_engine(f"sqlite:///{audit_log.db}")
    create_schema(engine)
    create_schema(engine)
    assert Ledger(engine).size() == audit_log.sink.size
    shutil.rmtree(audit_log.db.parent / "nonexistent", ignore_errors=True)


def test_a_sink_behind_the_topic_is_a_note_not_a_failure(
        audit_log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    producer = make_producer(audit_log.ns.connection("csc-test"), "test-audit-late")
    journal = AuditJournal(producer, audit_log.prefix + "audit", "web")
    journal.record(AuditAction.ALERT_VIEWED, "b" * 32, "hub-user", bytes(32), 1)
    journal.flush()
    producer.close()
    code, out = _verify(audit_log.db, capsys)
    assert code == 0, out
    assert "note: 1 record(s)" in out


def test_a_clean_stop_signs_the_unsigned_tail(audit_log: Log) -> None:
    import threading

    from safehub.services.audit.sink import run_until_stopped

    sink = audit_log.sink
    producer = make_producer(audit_log.ns.connection("router"), "test-audit-tail")
    journal = AuditJournal(producer, audit_log.prefix + "audit", "router")
    journal.record(AuditAction.ALERT_ROUTED, "f" * 32, "csc-test", b"\x01" * 32,
                   1_700_000_001_000)
    journal.flush()
    producer.close()
    before = sink.size
    _drain(sink, before + 1)
    assert sink.unsigned_entries == 1
    stop = threading.Event()
    stop.set()
    run_until_stopped(sink, stop)
    assert sink.unsigned_entries == 0
    newest = Ledger(open_engine(f"sqlite:///{audit_log.db}")).checkpoints()[-1]
    assert newest.tree_size == before + 1
