"""The router's memory: one SQL row per correlated alert it has seen, with its routing state.

Why a small SQL store rather than rebuilding from the output topics at start: pending (grouped)
and inhibited alerts never reach an output topic, and escalation deadlines must survive a
restart exactly. Rows are written after the notifications are acknowledged by the broker and
before the input offsets are committed, so a crash at any point either redelivers input that
the core recognises (same alert id: no-op) or re-sends a notification with the same id, which
every sink drops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    Integer,
    LargeBinary,
    String,
    delete,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from safehub.errors import StoreError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import CorrelatedAlert
from safehub.schemas.vocabulary import RouteReason
from safehub.services.router.core import ClusterState, Status, Tracked
from safehub.storage import Migrations, upgrade

# What routing changes about an alert; the alert itself (payload, cluster, route) never changes.
_MUTABLE = ("status", "level", "sent_at", "deadline")
_DELETE_CHUNK = 500  # cluster ids per DELETE: within every database's limit on bound parameters


class Base(DeclarativeBase):
    pass


MIGRATIONS = Migrations("router", Path(__file__).with_name("migrations") / "versions",
                        Base.metadata)


class RouterAlert(Base):
    __tablename__ = "router_alert"

    alert_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(32), index=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the CorrelatedAlert, as encoded
    receiver: Mapped[str] = mapped_column(String(64))
    escalation: Mapped[str] = mapped_column(String(64))
    lead_authority: Mapped[str | None] = mapped_column(String(9))
    reason: Mapped[str] = mapped_column(String(32))
    urgent: Mapped[bool] = mapped_column(Boolean)
    received_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    level: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[int | None] = mapped_column(BigInteger)
    deadline: Mapped[int | None] = mapped_column(BigInteger)


def _tracked(row: RouterAlert) -> Tracked:
    return Tracked(
        alert=decode(row.payload, CorrelatedAlert), receiver=row.receiver,
        escalation=row.escalation, lead_authority=row.lead_authority,
        reason=RouteReason(row.reason), urgent=row.urgent, received_at=row.received_at,
        status=Status(row.status), level=row.level, sent_at=row.sent_at, deadline=row.deadline)


class RouterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self) -> None:
        upgrade(self.engine, MIGRATIONS)

    def load(self) -> dict[str, ClusterState]:
        try:
            with Session(self.engine) as session:
                rows = session.scalars(select(RouterAlert).order_by(RouterAlert.received_at,
                                                                    RouterAlert.alert_id))
                grouped: dict[str, list[Tracked]] = {}
                for row in rows:
                    grouped.setdefault(row.cluster_id, []).append(_tracked(row))
        except SQLAlchemyError as exc:
            raise StoreError(f"router database: {type(exc).__name__}") from exc
        return {cid: ClusterState(cid, tuple(ts)) for cid, ts in grouped.items()}

    def forget(self, cluster_ids: Sequence[str]) -> None:
        """Delete every alert of these clusters, in one transaction."""
        try:
            with self.engine.begin() as connection:
                for at in range(0, len(cluster_ids), _DELETE_CHUNK):
                    chunk = cluster_ids[at:at + _DELETE_CHUNK]
                    connection.execute(delete(RouterAlert)
                                       .where(RouterAlert.cluster_id.in_(chunk)))
        except SQLAlchemyError as exc:
            raise StoreError(f"router database: {type(exc).__name__}") from exc

    def save(self, clusters: Iterable[ClusterState],
             payloads: Mapping[str, bytes] | None = None) -> None:
        """Upsert every alert of these clusters, in one transaction, as one batched statement.

        `payloads` maps alert ids to their encoded bytes as received, sparing a re-encode.
        """
        known = payloads or {}
        rows = [
            {"alert_id": t.alert.alert_id, "cluster_id": state.cluster_id,
             "payload": known.get(t.alert.alert_id) or encode(t.alert), "receiver": t.receiver,
             "escalation": t.escalation, "lead_authority": t.lead_authority,
             "reason": t.reason.value, "urgent": t.urgent, "received_at": t.received_at,
             "status": t.status.value, "level": t.level, "sent_at": t.sent_at,
             "deadline": t.deadline}
            for state in clusters for t in state.alerts
        ]
        if not rows:
            return
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(RouterAlert)
        stmt = stmt.on_conflict_do_update(
            index_elements=["alert_id"],
            set_={name: stmt.excluded[name] for name in _MUTABLE})
        try:
            with self.engine.begin() as connection:
                connection.execute(stmt, rows)
        except SQLAlchemyError as exc:
            raise StoreError(f"router database: {type(exc).__name__}") from exc
