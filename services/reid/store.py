"""The agency's re-identification requests and their decisions (SQLAlchemy 2).

One database per process, with an agency column: a process may serve several agencies, and
every read is scoped by agency. SQLite by default (WAL, synchronous=FULL, so a request stored
before its offset was committed survives a power cut), PostgreSQL supported; the schema is
Alembic revisions in `migrations/`.

A request is stored once (the request id and agency are the primary key, so a redelivery is a
no-op) with its contract bytes, which name no child. A decision is recorded only once: the
update applies to an undecided request only, so a second decision finds nothing to change.
A request naming none of the agency's handles is stored as UNKNOWN, never shown as pending, and
answered "not found" by the service itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from safehub import storage
from safehub.errors import StoreError
from safehub.schemas.codec import decode
from safehub.schemas.records import ReidRequest
from safehub.schemas.vocabulary import DeclineReason, ReidOutcome

PENDING = "PENDING"  # waiting for the officer
UNKNOWN = "UNKNOWN"  # none of its handles is the agency's: the service answers "not found"
DECIDED = "DECIDED"

metadata = MetaData()
MIGRATIONS = storage.Migrations("reid", Path(__file__).with_name("migrations") / "versions",
                                metadata)

requests = Table(
    "reid_agency_requests", metadata,
    Column("agency_id", String(64), primary_key=True),
    Column("request_id", String(32), primary_key=True),
    Column("hub_id", String(64), nullable=False),
    Column("alert_id", String(32), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("request", LargeBinary, nullable=False),  # the contract bytes as received
    Column("status", String(16), nullable=False, index=True),
    Column("outcome", String(32)),
    Column("decline_reason", String(64)),
    Column("officer", String(64)),
    Column("decided_at", BigInteger),
    Column("response_id", String(32)),
)


@dataclass(frozen=True, slots=True)
class StoredRequest:
    request: ReidRequest
    raw: bytes
    received_at: int
    status: str
    outcome: ReidOutcome | None
    decline_reason: DeclineReason | None
    officer: str | None
    decided_at: int | None

    @property
    def decided(self) -> bool:
        return self.status == DECIDED


class RequestStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> RequestStore:
        """Connect and create the schema or bring it to the newest revision."""
        engine = storage.open_engine(url)
        storage.upgrade(engine, MIGRATIONS)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def save(self, request: ReidRequest, raw: bytes, received_at: int,
             status: str = PENDING) -> bool:
        """Store a received request; False if it was already stored (a redelivery)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(requests).values(
                    agency_id=request.agency_id, request_id=request.request_id,
                    hub_id=request.hub_id, alert_id=request.alert_id, received_at=received_at,
                    request=raw, status=status))
            return True
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise StoreError(f"re-identification store write failed: "
                             f"{type(exc).__name__}") from exc

    def get(self, agency_id: str, request_id: str) -> StoredRequest | None:
        rows = self._select(requests.c.agency_id == agency_id,
                            requests.c.request_id == request_id)
        return rows[0] if rows else None

    def pending(self, agency_id: str) -> list[StoredRequest]:
        return self._select(requests.c.agency_id == agency_id, requests.c.status == PENDING)

    def all(self, agency_id: str) -> list[StoredRequest]:
        return self._select(requests.c.agency_id == agency_id)

    def _select(self, *where: object) -> list[StoredRequest]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(requests).where(*where)  # type: ignore[arg-type]
                                    .order_by(requests.c.received_at,
                                              requests.c.request_id)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"re-identification store read failed: "
                             f"{type(exc).__name__}") from exc
        return [StoredRequest(
            request=decode(r.request, ReidRequest), raw=bytes(r.request),
            received_at=r.received_at, status=r.status,
            outcome=ReidOutcome(r.outcome) if r.outcome else None,
            decline_reason=DeclineReason(r.decline_reason) if r.decline_reason else None,
            officer=r.officer, decided_at=r.decided_at) for r in rows]

    def mark_decided(self, agency_id: str, request_id: str, outcome: ReidOutcome,
                     reason: DeclineReason | None, officer: str, at_ms: int,
                     response_id: str) -> bool:
        """Record the decision; False if the request was decided already."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(requests)
                    .where(requests.c.agency_id == agency_id,
                           requests.c.request_id == request_id, requests.c.status != DECIDED)
                    .values(status=DECIDED, outcome=outcome.value,
                            decline_reason=None if reason is None else reason.value,
                            officer=officer, decided_at=at_ms, response_id=response_id))
                return bool(result.rowcount == 1)
        except SQLAlchemyError as exc:
            raise StoreError(f"re-identification store write failed: "
                             f"{type(exc).__name__}") from exc
