"""The inbox's reads and writes. Every SQLAlchemy failure surfaces as StoreError, which the
consumer treats as "database down: wait, retry, commit no offset"; except that a batch the
database refuses for its data (a value too long, a constraint other than a redelivered id) is
RecordRefused, which no retry can cure: the consumer dead-letters the record instead."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, case, func, insert, select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from safehub.consumers.inbox.models import (
    InboxAck,
    InboxAlert,
    InboxEvidence,
    InboxReidentification,
)
from safehub.errors import StoreError
from safehub.schemas.records import AlertAck, RoutedAlert
from safehub.schemas.vocabulary import AckAction

STATUSES = ("NEW", "ACKNOWLEDGED", "DECIDED")
# "newest": undecided first, then the most recently raised; "deadline": undecided first, then
# the earliest acknowledgement deadline. Either way a decided alert never hides an open one.
SORTS = ("newest", "deadline")
MAX_PAGE_SIZE = 500


class RecordRefused(StoreError):
    """The database refused the data itself: retrying the same rows can never succeed."""


@dataclass(frozen=True, slots=True)
class QueueFilter:
    tier: str | None = None
    status: str | None = None
    min_age: int | None = None  # the child's age in years
    max_age: int | None = None
    overdue: bool = False
    sort: str = "newest"


@dataclass(frozen=True, slots=True)
class QueuePage:
    """One page of a hub's queue and how many rows the whole filtered queue holds."""

    rows: list[InboxAlert]
    total: int
    page: int  # from 1
    size: int

    @property
    def first(self) -> int:
        """The 1-based position of the page's first row (0 when the page is empty)."""
        return (self.page - 1) * self.size + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return (self.page - 1) * self.size + len(self.rows)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        return self.page * self.size < self.total

    @property
    def has_previous(self) -> bool:
        return self.page > 1


def _rows(routed: RoutedAlert, raw: bytes, received_at: int
          ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The alert's row, its evidence rows and its re-identification rows, as column values."""
    a = routed.alert
    nid = routed.notification_id
    alert = {
        "notification_id": nid, "alert_id": a.alert_id, "agency_id": routed.receiver_agency,
        "cluster_id": a.cluster_id, "tier": a.tier.value, "rule": a.rule, "score": a.score,
        "raised_at": a.raised_at, "age_years": a.age_years, "local_authority": a.local_authority,
        "placing_authority": a.placing_authority, "lead_authority": routed.lead_authority,
        "reason": routed.reason.value, "escalation_level": routed.escalation_level,
        "ack_deadline": routed.ack_deadline, "rules_version": a.rules_version,
        "agencies": " ".join(a.agencies), "identity_conflict": a.identity_conflict,
        "authority_conflict": " ".join(a.authority_conflict) if a.authority_conflict else None,
        "explanation": a.explanation,
        "digest": hashlib.sha256(raw).digest(), "received_at": received_at, "status": "NEW",
        "decision": None, "acknowledged_at": None, "decided_at": None,
    }
    evidence = [
        {"notification_id": nid, "event_id": e.event_id, "agency_id": e.agency_id,
         "sector": e.sector.value, "indicator": e.indicator.value,
         "occurred_at": e.occurred_at, "weight": e.weight}
        for e in a.evidence
    ]
    reidentification = [
        {"notification_id": nid, "agency_id": r.agency_id, "reid_handle": r.reid_handle}
        for r in a.reidentification
    ]
    return alert, evidence, reidentification


@contextmanager
def inbox_session(engine: Engine) -> Iterator[Session]:
    """A session whose every database failure is a StoreError naming only its class."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except SQLAlchemyError as exc:
        # The class name says what failed; the message could quote row values.
        raise StoreError(f"inbox database: {type(exc).__name__}") from exc


class InboxStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> AbstractContextManager[Session]:
        return inbox_session(self.engine)

    def save(self, batch: Sequence[tuple[RoutedAlert, bytes]], received_at: int) -> int:
        """Insert what is new, in one transaction; return how many rows were new.

        A notification id already stored (a redelivery) is skipped, so replaying a batch is a
        no-op. A concurrent insert of the same id makes the unique constraint fire: the whole
        batch is retried once, and then sees the row.
        """
        for attempt in (1, 2):
            try:
                with self._session() as session:
                    ids = {r.notification_id for r, _ in batch}
                    have = set(session.scalars(select(InboxAlert.notification_id)
                                               .where(InboxAlert.notification_id.in_(ids))))
                    alerts: dict[str, dict[str, Any]] = {}
                    evidence: list[dict[str, Any]] = []
                    reidentification: list[dict[str, Any]] = []
                    for routed, raw in batch:
                        nid = routed.notification_id
                        if nid in have or nid in alerts:
                            continue
                        alerts[nid], ev, reid = _rows(routed, raw, received_at)
                        evidence += ev
                        reidentification += reid
                    # Multi-row INSERTs of plain values, not ORM objects: the ORM's unit of
                    # work cost ~10x more per row, and at 700 alerts/s it left the inbox behind.
                    if alerts:
                        session.execute(insert(InboxAlert), list(alerts.values()))
                    if evidence:
                        session.execute(insert(InboxEvidence), evidence)
                    if reidentification:
                        session.execute(insert(InboxReidentification), reidentification)
                    session.commit()
                    return len(alerts)
            except StoreError as exc:
                cause = exc.__cause__
                if attempt == 1 and isinstance(cause, IntegrityError):
                    continue  # maybe a concurrent insert of the same id: the retry skips it
                if isinstance(cause, (DataError, IntegrityError)):
                    # The duplicate case is gone after the retry, so this is the data itself.
                    raise RecordRefused(str(exc)) from cause
                raise
        raise AssertionError("unreachable")

    def count(self, agency_id: str | None = None) -> int:
        with self._session() as session:
            query = select(func.count()).select_from(InboxAlert)
            if agency_id is not None:
                query = query.where(InboxAlert.agency_id == agency_id)
            return int(session.scalar(query) or 0)

    def queue(self, agency_id: str, flt: QueueFilter, now: int, limit: int = MAX_PAGE_SIZE
              ) -> list[InboxAlert]:
        """The first `limit` rows of the queue only: pages use `queue_page`, which also says
        how many rows there are, so that no row is ever dropped without saying so."""
        return self.queue_page(agency_id, flt, now, 1, limit).rows

    def queue_page(self, agency_id: str, flt: QueueFilter, now: int, page: int = 1,
                   size: int = 50) -> QueuePage:
        """One page of the agency's filtered queue, with the filtered queue's total."""
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError("page from 1, size from 1 to MAX_PAGE_SIZE")
        where: list[ColumnElement[bool]] = [InboxAlert.agency_id == agency_id]
        if flt.tier:
            where.append(InboxAlert.tier == flt.tier)
        if flt.status:
            where.append(InboxAlert.status == flt.status)
        if flt.min_age is not None:
            where.append(InboxAlert.age_years >= flt.min_age)
        if flt.max_age is not None:
            where.append(InboxAlert.age_years <= flt.max_age)
        if flt.overdue:
            where += [InboxAlert.status == "NEW", InboxAlert.ack_deadline <= now,
                      InboxAlert.reason != "HOST_AUTHORITY"]  # for information only
        decided_last = case((InboxAlert.status == "DECIDED", 1), else_=0)
        then = (InboxAlert.ack_deadline.asc() if flt.sort == "deadline"
                else InboxAlert.raised_at.desc())
        # The id last makes the order total, so pages neither repeat nor skip a row.
        rows_query = (select(InboxAlert).where(*where)
                      .order_by(decided_last, then, InboxAlert.notification_id)
                      .offset((page - 1) * size).limit(size))
        with self._session() as session:
            total = int(session.scalar(select(func.count()).select_from(InboxAlert)
                                       .where(*where)) or 0)
            rows = list(session.scalars(rows_query))
        return QueuePage(rows, total, page, size)

    def alert(self, agency_id: str, notification_id: str) -> InboxAlert | None:
        """The alert if, and only if, it was sent to this agency."""
        query = (select(InboxAlert)
                 .where(InboxAlert.notification_id == notification_id,
                        InboxAlert.agency_id == agency_id)
                 .options(selectinload(InboxAlert.evidence),
                          selectinload(InboxAlert.reidentification),
                          selectinload(InboxAlert.acks)))
        with self._session() as session:
            return session.scalars(query).first()

    def record_ack(self, notification_id: str, ack: AlertAck) -> None:
        """Store the ack (as an unpublished outbox row) and move the alert's status on."""
        with self._session() as session:
            row = session.get(InboxAlert, notification_id)
            if row is None or row.agency_id != ack.agency_id:
                raise StoreError("inbox database: no such alert for this agency")
            session.add(InboxAck(
                ack_id=ack.ack_id, notification_id=notification_id, alert_id=ack.alert_id,
                agency_id=ack.agency_id, user_ref=ack.user_ref, action=ack.action.value,
                decision=ack.decision.value if ack.decision else None, at=ack.at,
                lawful_basis=ack.lawful_basis.value if ack.lawful_basis else None,
                rationale=ack.rationale.value if ack.rationale else None))
            if ack.action is AckAction.DECIDED:
                row.status, row.decision, row.decided_at = "DECIDED", ack.decision, ack.at
                row.acknowledged_at = row.acknowledged_at or ack.at
            elif row.status == "NEW":
                row.status, row.acknowledged_at = "ACKNOWLEDGED", ack.at
            session.commit()

    def unpublished_acks(self, limit: int = 100,
                         agencies: Collection[str] | None = None) -> list[InboxAck]:
        """The oldest acks not yet acknowledged by the broker (of these agencies only, if given)."""
        query = select(InboxAck).where(InboxAck.published_at.is_(None))
        if agencies is not None:
            query = query.where(InboxAck.agency_id.in_(sorted(agencies)))
        with self._session() as session:
            return list(session.scalars(query.order_by(InboxAck.at).limit(limit)))

    def mark_published(self, ack_id: str, at: int) -> None:
        with self._session() as session:
            row = session.get(InboxAck, ack_id)
            if row is not None:
                row.published_at = at
                session.commit()
