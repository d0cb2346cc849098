"""The agency's local re-identification vault.

Each child an agency reports gets one random handle (32 hex) per agency; the events carry only
that handle. The vault, which never leaves the agency, maps the handle back to the agency's own
references: its person reference for the child (or, if the export has none, the child's
strongest match key, which the agency can recompute from its records) and every record
reference it published about that child. So when a lead agency asks "who is this?", only the
agency that sent the event can answer, from its own systems.

The vault holds no name, date of birth, NHS number or postcode.

SQLAlchemy 2; SQLite by default (WAL, synchronous=FULL, so a handle that went out in an event
survives a power cut), PostgreSQL supported; the schema is Alembic revisions in
`vault_migrations/`. Handles are written and committed before the events that carry them are
sent.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from safehub import storage
from safehub.errors import StoreError

_IN_CHUNK = 500  # bound on bound parameters per IN (...), well under every backend's limit

metadata = MetaData()
MIGRATIONS = storage.Migrations(
    "vault", Path(__file__).with_name("vault_migrations") / "versions", metadata)

children = Table(
    "vault_children", metadata,
    Column("reid_handle", String(32), primary_key=True),
    Column("agency_id", String(64), nullable=False),
    # "ref:<the agency's person reference>" or "mk:<hex of the child's strongest match key>"
    Column("person_key", String(256), nullable=False),
    UniqueConstraint("agency_id", "person_key", name="uq_vault_children_person"),
)

records = Table(
    "vault_records", metadata,
    Column("agency_id", String(64), primary_key=True),
    Column("record_ref", String(256), primary_key=True),
    Column("reid_handle", String(32), ForeignKey("vault_children.reid_handle"), nullable=False,
           index=True),
    Column("event_id", String(32), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the vault must know about one outgoing event."""

    person_key: str
    record_ref: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Reidentification:
    """The agency's own references for the child behind a handle."""

    reid_handle: str
    person_ref: str | None  # None when the export carried no person reference
    record_refs: tuple[str, ...]


def _new_handle() -> str:
    return secrets.token_hex(16)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i:i + _IN_CHUNK] for i in range(0, len(items), _IN_CHUNK)]


def _known_handles(conn: Connection, table: Table, key: str, agency_id: str,
                   keys: Sequence[str]) -> dict[str, str]:
    """key -> reid_handle for those of `keys` the agency already has in `table` (looked up in
    chunks: a database limits the parameters of one statement)."""
    column = table.c[key]
    found: dict[str, str] = {}
    for chunk in _chunks(keys):
        rows = conn.execute(select(column, table.c.reid_handle).where(
            table.c.agency_id == agency_id, column.in_(chunk)))
        found.update({row[0]: row[1] for row in rows})
    return found


class Vault:
    def __init__(self, engine: Engine, new_handle: Callable[[], str] = _new_handle) -> None:
        self.engine = engine
        self._new_handle = new_handle

    @classmethod
    def open(cls, url: str) -> Vault:
        """Connect and create the schema or bring it to the newest revision."""
        # Writers of one agency may share the file: wait out another's lock rather than fail.
        engine = storage.open_engine(url, busy_timeout_s=30.0)
        storage.upgrade(engine, MIGRATIONS)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing --------------------------------------------------------------------------
    def assign(self, agency_id: str, items: Sequence[Assignment]) -> list[str]:
        """Return the handle for each item, creating handles and record rows as needed.

        One transaction for the whole batch. A record already in the vault keeps the handle it
        was first published with, so re-sending an export yields byte-identical events.
        """
        if not items:
            return []
        for attempt in (1, 2):
            try:
                with self.engine.begin() as conn:
                    return self._assign(conn, agency_id, items)
            except IntegrityError:
                # Another publisher of the same agency created a row in between: the second
                # attempt sees it and reuses it.
                if attempt == 2:
                    raise StoreError("vault: concurrent writers kept conflicting") from None
            except SQLAlchemyError as exc:
                raise StoreError(f"vault write failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def _assign(self, conn: Connection, agency_id: str, items: Sequence[Assignment]) -> list[str]:
        refs = sorted({i.record_ref for i in items})
        known_records = _known_handles(conn, records, "record_ref", agency_id, refs)
        people = sorted({i.person_key for i in items if i.record_ref not in known_records})
        handle_of = _known_handles(conn, children, "person_key", agency_id, people)
        new_children = [
            {"reid_handle": self._new_handle(), "agency_id": agency_id, "person_key": p}
            for p in people if p not in handle_of
        ]
        if new_children:
            conn.execute(insert(children), new_children)
            handle_of.update({c["person_key"]: c["reid_handle"] for c in new_children})
        new_records: dict[str, dict[str, str]] = {}
        result = []
        for item in items:
            handle = known_records.get(item.record_ref)
            if handle is None:
                handle = handle_of[item.person_key]
                new_records.setdefault(item.record_ref, {
                    "agency_id": agency_id, "record_ref": item.record_ref,
                    "reid_handle": handle, "event_id": item.event_id,
                })
                known_records[item.record_ref] = handle
            result.append(handle)
        if new_records:
            conn.execute(insert(records), list(new_records.values()))
        return result

    # -- reading --------------------------------------------------------------------------
    def resolve(self, agency_id: str, reid_handle: str) -> Reidentification | None:
        """The agency's references for a handle it issued; None for anyone else's handle."""
        try:
            with self.engine.connect() as conn:
                child = conn.execute(
                    select(children.c.person_key).where(
                        children.c.reid_handle == reid_handle, children.c.agency_id == agency_id
                    )
                ).first()
                if child is None:
                    return None
                refs = conn.execute(
                    select(records.c.record_ref)
                    .where(records.c.reid_handle == reid_handle)
                    .order_by(records.c.record_ref)
                ).scalars().all()
        except SQLAlchemyError as exc:
            raise StoreError(f"vault read failed: {type(exc).__name__}") from exc
        person_key: str = child[0]
        person_ref = person_key[4:] if person_key.startswith("ref:") else None
        return Reidentification(reid_handle, person_ref, tuple(refs))

    def counts(self, agency_id: str) -> tuple[int, int]:
        """(children, records) held for the agency."""
        with self.engine.connect() as conn:
            n_children = conn.execute(
                select(func.count()).select_from(children)
                .where(children.c.agency_id == agency_id)
            ).scalar_one()
            n_records = conn.execute(
                select(func.count()).select_from(records)
                .where(records.c.agency_id == agency_id)
            ).scalar_one()
        return int(n_children), int(n_records)
