"""The audit log in SQL: one append-only row per record on `audit`, and the signed checkpoints.

Row `seq` is the leaf index in the Merkle tree and follows the topic offset one for one, so a
stored row can always be matched with the record it came from. Triggers refuse UPDATE and DELETE:
the table is append-only for the application; someone with the database owner's rights can still
drop the trigger, and that is what `safehub audit verify` is for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from safehub.errors import StoreError

metadata = MetaData()

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

_SQLITE_GUARDS = [
    f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
    f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END"
    for t in ("audit_entries", "audit_checkpoints") for op in ("UPDATE", "DELETE")
]

_PG_GUARDS = [
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$",
    *[
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{t}_append_only'"
        f" AND tgrelid = '{t}'::regclass)"
        f" THEN CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
        f"FOR EACH ROW EXECUTE FUNCTION audit_append_only(); END IF; END $$"
        for t in ("audit_entries", "audit_checkpoints")
    ],
]


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


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for the audit store. Read-only auditors open SQLite in `mode=ro`."""
    try:
        if url.startswith("sqlite"):
            if read_only:
                path = url.split("///", 1)[1]
                engine = create_engine("sqlite://", creator=_ro_sqlite(path))
            else:
                engine = create_engine(url)
                event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the audit store: {type(exc).__name__}") from exc
    return engine


def _ro_sqlite(path: str) -> object:
    import sqlite3

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    return connect


def create_schema(engine: Engine) -> None:
    try:
        metadata.create_all(engine)
        guards = _SQLITE_GUARDS if engine.dialect.name == "sqlite" else _PG_GUARDS
        with engine.begin() as conn:
            for statement in guards:
                conn.execute(text(statement))
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot create the audit store schema: {type(exc).__name__}") from exc


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
