"""The audit log in SQL: one append-only row per record on `audit`, and the signed checkpoints.

Row `seq` is the leaf index in the Merkle tree and follows the topic offset one for one, so a
stored row can always be matched with the record it came from. Triggers refuse UPDATE and DELETE:
the table is append-only for the application; someone with the database owner's rights can still
drop the trigger, and that is what `safehub audit verify` is for. The schema and its guards are
Alembic revisions in `migrations/`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from safehub import storage
from safehub.errors import StoreError

metadata = MetaData()
MIGRATIONS = storage.Migrations("audit", Path(__file__).with_name("migrations") / "versions",
                                metadata)

entries = Table(
    "audit_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # leaf index
    Column("topic_offset", BigInteger, nullable=False, unique=True),
    Column("entry_id", String(32), nullable=True),  # None when the record did not decode
    Column("service", String(64), nullable=True),
    Column("action", String(64), nullable=True),
    Column("subject_id", String(32), nullable=True),
    Column("at_ms", BigInteger, nullable=True),
    Column("raw", LargeBinary, nullable=False),  # the record's exact bytes: the Merkle leaf
    Column("leaf_hash", LargeBinary(32), nullable=False),
)

checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),  # the signed checkpoint, verbatim
    Column("signed_at_ms", BigInteger, nullable=False),
)

@dataclass(frozen=True, slots=True)
class StoredEntry:
    seq: int
    topic_offset: int
    entry_id: str | None
    raw: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str
    signed_at_ms: int


@dataclass(frozen=True, slots=True)
class NewEntry:
    topic_offset: int
    entry_id: str | None
    service: str | None
    action: str | None
    subject_id: str | None
    at_ms: int | None
    raw: bytes
    leaf_hash: bytes


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for the audit store. Read-only auditors open SQLite in `mode=ro`."""
    return storage.open_engine(url, read_only=read_only)


def migrate(engine: Engine) -> None:
    """Create the ledger or bring it to the newest revision, append-only guards included.
    A ledger created before the ledger had migrations is recognised, not recreated."""
    storage.upgrade(engine, MIGRATIONS)


# The audit sink's name for it (services/audit/sink.py).
create_schema = migrate


class Ledger:
    """Appends and reads the audit log. The sink is the only writer."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def size(self) -> int:
        with self._guard("count entries"), self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())

    def next_offset(self) -> int | None:
        """The topic offset after the last stored one; None for an empty store."""
        with self._guard("read the last offset"), self._engine.connect() as conn:
            last = conn.execute(select(func.max(entries.c.topic_offset))).scalar_one()
        return None if last is None else int(last) + 1

    def append(self, first_seq: int, batch: Sequence[NewEntry]) -> None:
        if not batch:
            return
        rows = [
            {"seq": first_seq + i, "topic_offset": e.topic_offset, "entry_id": e.entry_id,
             "service": e.service, "action": e.action, "subject_id": e.subject_id,
             "at_ms": e.at_ms, "raw": e.raw, "leaf_hash": e.leaf_hash}
            for i, e in enumerate(batch)
        ]
        with self._guard("append entries"), self._engine.begin() as conn:
            conn.execute(insert(entries), rows)

    def add_checkpoint(self, cp: StoredCheckpoint) -> None:
        with self._guard("store a checkpoint"), self._engine.begin() as conn:
            conn.execute(insert(checkpoints).values(
                tree_size=cp.tree_size, root_hash=cp.root_hash, note=cp.note,
                signed_at_ms=cp.signed_at_ms))

    def leaf_hashes(self) -> list[bytes]:
        with self._guard("read leaf hashes"), self._engine.connect() as conn:
            return [bytes(r[0]) for r in conn.execute(
                select(entries.c.leaf_hash).order_by(entries.c.seq))]

    def entries(self, batch: int = 5000) -> Iterator[StoredEntry]:
        """Every stored row in leaf order, streamed."""
        with self._guard("read entries"), self._engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(
                select(entries.c.seq, entries.c.topic_offset, entries.c.entry_id,
                       entries.c.raw, entries.c.leaf_hash).order_by(entries.c.seq))
            for r in result:
                yield StoredEntry(int(r[0]), int(r[1]), r[2], bytes(r[3]), bytes(r[4]))

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._guard("read checkpoints"), self._engine.connect() as conn:
            return [StoredCheckpoint(int(r[0]), bytes(r[1]), r[2], int(r[3]))
                    for r in conn.execute(
                        select(checkpoints.c.tree_size, checkpoints.c.root_hash,
                               checkpoints.c.note, checkpoints.c.signed_at_ms)
                        .order_by(checkpoints.c.id))]

    def _guard(self, what: str) -> _StoreGuard:
        return _StoreGuard(what)


class _StoreGuard:
    """Translates SQLAlchemy failures into StoreError, naming the operation, not the data."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: object) -> None:
        if exc is not None and isinstance(exc, SQLAlchemyError):
            raise StoreError(f"audit store: cannot {self._what}: {type(exc).__name__}") from exc
