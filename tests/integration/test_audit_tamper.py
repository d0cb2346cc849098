"""An operator who controls the hub rewrites or rolls back the audit log; an auditor's pin and
a witness the hub does not control catch it (real broker, real SQLite stores, the CLI).

The attack is the one the hub's own key cannot stop: delete and recreate `audit` with one entry
altered, wipe the ledger, let a new sink re-sign everything with the hub's key. Without a pin,
`safehub audit verify` has nothing to tell the new history from the old, and passes. The hub's
stores are SQLite files and PostgreSQL schemas alike (a restored backup is a file copy, so the
rollback test is SQLite's).
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from kafka.errors import KafkaError
from nacl.signing import SigningKey

from safehub.bus import make_producer
from safehub.cli import main
from safehub.deploy.topics import create_topics, delete_topics_with_prefix, registry_specs
from safehub.errors import BrokerError
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.checkpoint import TreeHead, sign
from safehub.services.audit.journal import AuditJournal
from safehub.services.audit.ledger import Ledger, NewEntry, StoredCheckpoint, migrate, open_engine
from safehub.services.audit.merkle import MerkleTree, leaf_hash
from safehub.services.audit.sink import AuditSink, SinkSettings, open_sink
from tests.conftest import Namespace
from tests.fixtures.audit import auditor_env
from tests.fixtures.databases import fresh_postgres_schema

pytestmark = pytest.mark.integration

KEY = SigningKey(hashlib.sha256(b"tamper test hub key").digest())
PUBLIC = bytes(KEY.verify_key).hex()
WITNESS = SigningKey(hashlib.sha256(b"tamper test witness key").digest())
WITNESS_PUBLIC = bytes(WITNESS.verify_key).hex()


def journal(ns: Namespace, first: int, count: int, altered: int | None = None) -> None:
    producer = make_producer(ns.connection("correlator"), "test-audit-tamper")
    try:
        j = AuditJournal(producer, ns.prefix + "audit", "correlator")
        for i in range(first, first + count):
            digest = hashlib.sha256(str(i).encode() + (b"!" if i == altered else b"")).digest()
            j.record(AuditAction.EVENT_ACCEPTED, f"{i:032x}", "police-test", digest,
                     1_700_000_000_000 + i)
        j.flush()
    finally:
        producer.close()


def url(db: Path | str) -> str:
    return db if isinstance(db, str) else f"sqlite:///{db}"


def sink_for(ns: Namespace, db: Path | str, entries: int = 0,
             altered: int | None = None) -> AuditSink:
    """A sink on `db`, its ledger holding the first `entries` entries, signed."""
    sink = open_sink(SinkSettings(ns.connection("audit-sink"), ns.prefix + "audit",
                                  ns.prefix + "deadletter", url(db),
                                  "safehub.test/audit", None, 10, 3_600_000), KEY)
    if entries:
        extend(ns, sink, 0, entries, altered)
    return sink


def extend(ns: Namespace, sink: AuditSink, first: int, count: int,
           altered: int | None = None) -> None:
    """Journal entries first..first + count - 1 and let `sink` store and sign them."""
    journal(ns, first, count, altered)
    settle(sink, first + count)


def settle(sink: AuditSink, want: int) -> None:
    """Store `want` entries, sign them, and store the checkpoint records that come back."""
    for _ in range(60):
        if sink.size >= want:
            break
        sink.poll_once(timeout_ms=500)
    assert sink.size >= want, f"sink stored {sink.size} of {want}"
    if sink.unsigned_entries:
        sink.checkpoint()
    quiet = 0
    while quiet < 2:  # the checkpoint records themselves come back as leaves
        quiet = quiet + 1 if sink.poll_once(timeout_ms=500) == 0 else 0


def verify(capsys: pytest.CaptureFixture[str], db: Path | str, *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--db", url(db), "--public-key", PUBLIC, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def witness(capsys: pytest.CaptureFixture[str], db: Path | str, tmp: Path, out: Path,
            *extra: str) -> tuple[int, str]:
    key = tmp / "witness.key"
    if not key.exists():
        key.write_text(bytes(WITNESS).hex())
        key.chmod(0o600)
    code = main(["audit", "witness", "--db", url(db), "--public-key", PUBLIC,
                 "--key-file", str(key), "--name", "witness.test/w1",
                 "--state", str(tmp / "witness-state"), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def recreate_audit_topic(ns: Namespace) -> None:
    """What an operator with the admin principal can do: the topic goes, a new one comes."""
    spec = [s for s in registry_specs(ns.registry, 1, ns.prefix) if s.name == ns.prefix + "audit"]
    delete_topics_with_prefix(ns.kafka, ns.prefix + "audit")
    deadline = time.monotonic() + 60
    while True:
        try:
            if create_topics(ns.kafka, spec):
                return
        except (BrokerError, KafkaError):
            pass  # still being deleted
        assert time.monotonic() < deadline, "the audit topic was not recreated"
        time.sleep(0.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """new_store() -> the URL of an empty audit store of the parametrised kind."""
    made = itertools.count()
    with ExitStack() as stack:
        def make() -> str:
            if request.param == "sqlite":
                return url(tmp_path / f"store-{next(made)}.db")
            base = request.getfixturevalue("postgres_url")
            return stack.enter_context(contextmanager(fresh_postgres_schema)(base))

        yield make


@pytest.fixture
def ns(secure_namespace: Callable[..., Namespace],
       monkeypatch: pytest.MonkeyPatch) -> Namespace:
    namespace = secure_namespace(agencies={"police-test": "POLICE"}, hubs=["csc-test"])
    auditor_env(namespace, monkeypatch)
    return namespace


def test_a_rewritten_history_is_a_fork_against_the_pin_and_the_witness(
        ns: Namespace, new_store: Callable[[], str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    genuine = new_store()
    sink = sink_for(ns, genuine, entries=15)
    sink.close()
    pin, cosigned = tmp_path / "pin.txt", tmp_path / "witnessed.txt"
    code, out = verify(capsys, genuine, "--save-pin", str(pin))
    assert code == 0, out
    assert "pinned the head of size" in out
    code, out = witness(capsys, genuine, tmp_path, cosigned)
    assert code == 0 and "first checkpoint witnessed" in out, out

    # The operator: a new `audit` with entry 4 altered and a few more, a wiped ledger, the
    # hub's own key signing the new history.
    recreate_audit_topic(ns)
    rewritten = new_store()
    sink = sink_for(ns, rewritten, entries=20, altered=4)
    sink.close()

    code, out = verify(capsys, rewritten)
    assert code == 0, out  # the hub's key, its store and its topic all agree: no pin, no case

    code, out = verify(capsys, rewritten, "--pin", str(pin))
    assert code == 1, out
    assert "[forked] the pinned checkpoint" in out
    assert "is not a consistent extension of it" in out and "the log was rewritten" in out

    code, out = witness(capsys, rewritten, tmp_path, tmp_path / "refused.txt")
    assert code == 1, out
    assert "REFUSED: fork" in out and not (tmp_path / "refused.txt").exists()

    code, out = verify(capsys, rewritten, "--witness-key", WITNESS_PUBLIC,
                       "--witnessed", str(cosigned))
    assert code == 1, out
    assert "[forked] the checkpoint the witness cosigned" in out


def test_a_rolled_back_store_and_an_empty_one_fail(
        ns: Namespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "audit.db"
    sink = sink_for(ns, db, entries=12)
    backup = tmp_path / "backup.db"
    src, dst = sqlite3.connect(db), sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    extend(ns, sink, 12, 12)
    sink.close()
    pin = tmp_path / "pin.txt"
    code, out = verify(capsys, db, "--save-pin", str(pin))
    assert code == 0, out

    # The operator restores last week's backup of the store.
    code, out = verify(capsys, backup, "--no-topic")
    assert code == 0, out  # consistent in itself
    code, out = verify(capsys, backup, "--no-topic", "--pin", str(pin))
    assert code == 1 and "[rolled-back] the pinned checkpoint" in out, out
    code, out = verify(capsys, backup)
    assert code == 1 and "[truncated]" in out, out  # the topic's checkpoints say more

    # A wiped store: nothing to verify is a failure, and a rollback against the pin.
    empty = tmp_path / "empty.db"
    migrate(open_engine(f"sqlite:///{empty}"))
    code, out = verify(capsys, empty, "--no-topic")
    assert code == 1 and "[empty] nothing to verify" in out, out
    code, out = verify(capsys, empty, "--no-topic", "--pin", str(pin))
    assert code == 1 and "[rolled-back]" in out, out
    code, out = verify(capsys, empty, "--save-pin", str(tmp_path / "never.txt"))
    assert code == 1 and "[truncated]" in out and "pin NOT saved" in out, out


def test_the_witness_cosigns_an_extension_and_verify_requires_it(
        ns: Namespace, new_store: Callable[[], str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = new_store()
    sink = sink_for(ns, db, entries=8)
    first, second = tmp_path / "w1.txt", tmp_path / "w2.txt"
    code, out = witness(capsys, db, tmp_path, first)
    assert code == 0, out
    extend(ns, sink, 8, 8)
    code, out = witness(capsys, db, tmp_path, second)
    assert code == 0 and "consistency proof verified" in out, out
    extend(ns, sink, 16, 3)  # signed by the hub, not yet cosigned
    sink.close()

    code, out = verify(capsys, db, "--witness-key", WITNESS_PUBLIC, "--witnessed", str(second))
    assert code == 0, out
    assert "(cosigned by the witness); the hub signed up to size" in out

    code, out = verify(capsys, db, "--witness-key", WITNESS_PUBLIC)
    assert code == 1 and "[unwitnessed]" in out, out
    other = SigningKey(hashlib.sha256(b"not the witness").digest())
    code, out = verify(capsys, db, "--witness-key", bytes(other.verify_key).hex(),
                       "--witnessed", str(second))
    assert code == 1 and "[unwitnessed]" in out and "no valid cosignature" in out, out


def test_the_witness_trusts_only_its_own_state(
        new_store: Callable[[], str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No broker needed: a ledger the sink would have written, signed by the hub's key."""
    store = new_store()
    engine = open_engine(store)
    migrate(engine)
    ledger = Ledger(engine)
    raws = [f"entry {i}".encode() for i in range(12)]
    ledger.append(0, [NewEntry(i, None, None, None, None, None, r, leaf_hash(r))
                      for i, r in enumerate(raws)])
    tree = MerkleTree(leaf_hash(r) for r in raws)
    for size in (5, 12):
        note = sign(TreeHead("safehub.test/audit", size, tree.root(size)), KEY).note()
        ledger.add_checkpoint(StoredCheckpoint(size, tree.root(size), note, size))
    engine.dispose()
    first = tmp_path / "five.txt"
    first.write_text(sign(TreeHead("safehub.test/audit", 5, tree.root(5)), KEY).note())
    code, out = witness(capsys, store, tmp_path, tmp_path / "w5.txt", "--checkpoint", str(first))
    assert code == 0 and "first checkpoint witnessed (size 5)" in out, out
    code, out = witness(capsys, store, tmp_path, tmp_path / "w12.txt")
    assert code == 0 and "size 12 extends the cosigned size 5" in out, out
    assert (tmp_path / "witness-state").read_text() == (tmp_path / "w12.txt").read_text()

    # Whoever edits the witness's state (to make it forget) is refused, never trusted.
    state = tmp_path / "witness-state"
    state.write_text(first.read_text())  # the hub's own note, without the witness's line
    code, out = witness(capsys, store, tmp_path, tmp_path / "again.txt")
    assert code == 1 and "the witness state" in out and "does not verify" in out, out
    (tmp_path / "witness.key").chmod(0o640)
    code, out = witness(capsys, store, tmp_path, tmp_path / "again.txt")
    assert code == 1 and "chmod 600" in out, out
