"""The hub's re-identification requests and their answers, in the inbox database.

A request row is stored before it is sent (an outbox, like the acks), so a request made while
the broker is away goes out when it is back. An answer's identity stays sealed to the hub's
key in `sealed_identity`; only the web app opens it, for a signed-in user who has said why.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from safehub.consumers.inbox.models import InboxReidRequest, InboxReidView
from safehub.consumers.inbox.store import inbox_session
from safehub.errors import StoreError
from safehub.schemas.records import ReidResponse
from safehub.schemas.vocabulary import ReidOutcome

OPEN = "REQUESTED"  # sent (or about to be), no answer yet
EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class Answered:
    request: InboxReidRequest
    new: bool  # False: this answer was stored before (a redelivery)


class ReidRequests:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> AbstractContextManager[Session]:
        return inbox_session(self.engine)

    def add(self, rows: Collection[InboxReidRequest]) -> None:
        with self._session() as session:
            session.add_all(rows)
            session.commit()

    def get(self, hub_id: str, request_id: str) -> InboxReidRequest | None:
        with self._session() as session:
            row = session.get(InboxReidRequest, request_id)
            return row if row is not None and row.hub_id == hub_id else None

    def for_alert(self, hub_id: str, notification_id: str) -> list[InboxReidRequest]:
        query = (select(InboxReidRequest)
                 .where(InboxReidRequest.hub_id == hub_id,
                        InboxReidRequest.notification_id == notification_id)
                 .order_by(InboxReidRequest.requested_at, InboxReidRequest.agency_id))
        with self._session() as session:
            return list(session.scalars(query))

    def unpublished(self, hubs: Collection[str], limit: int = 100) -> list[InboxReidRequest]:
        query = (select(InboxReidRequest)
                 .where(InboxReidRequest.published_at.is_(None),
                        InboxReidRequest.hub_id.in_(sorted(hubs)))
                 .order_by(InboxReidRequest.requested_at).limit(limit))
        with self._session() as session:
            return list(session.scalars(query))

    def mark_published(self, request_id: str, at: int) -> None:
        with self._session() as session:
            row = session.get(InboxReidRequest, request_id)
            if row is not None and row.published_at is None:
                row.published_at = at
                session.commit()

    def answer(self, response: ReidResponse, answered_at: int, retention_ms: int) -> Answered:
        """Store an answer already checked against its request (consumers.inbox.answers)."""
        with self._session() as session:
            row = session.get(InboxReidRequest, response.request_id)
            if row is None:
                raise StoreError("inbox database: the answered request is gone")
            if row.response_id is not None:
                return Answered(row, new=False)
            row.status = response.outcome.value
            row.response_id = response.response_id
            row.decline_reason = (response.decline_reason.value
                                  if response.decline_reason is not None else None)
            row.responder_ref = response.user_ref
            row.answered_at = answered_at
            if response.outcome is ReidOutcome.APPROVED:
                row.sealed_identity = response.sealed_identity
                row.expires_at = answered_at + retention_ms
            session.commit()
            return Answered(row, new=True)

    def expire(self, hubs: Collection[str], now: int) -> list[InboxReidRequest]:
        """Drop every sealed identity past its retention that nobody decided to keep."""
        query = (select(InboxReidRequest)
                 .where(InboxReidRequest.hub_id.in_(sorted(hubs)),
                        InboxReidRequest.sealed_identity.is_not(None),
                        InboxReidRequest.kept_at.is_(None),
                        InboxReidRequest.expires_at <= now))
        with self._session() as session:
            rows = list(session.scalars(query))
            for row in rows:
                row.sealed_identity = None
                row.status = EXPIRED
            session.commit()
            return rows

    def keep(self, hub_id: str, request_id: str, user_ref: str, now: int) -> InboxReidRequest:
        with self._session() as session:
            row = session.get(InboxReidRequest, request_id)
            if row is None or row.hub_id != hub_id or row.sealed_identity is None:
                raise StoreError("inbox database: no identity of this hub to keep")
            row.kept_by, row.kept_at = user_ref, now
            session.commit()
            return row

    def record_view(self, request_id: str, user_ref: str, reason: str, at: int) -> None:
        with self._session() as session:
            session.add(InboxReidView(request_id=request_id, user_ref=user_ref, reason=reason,
                                      at=at))
            session.commit()
