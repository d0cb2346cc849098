"""What the web app does, apart from HTTP: scoped reads, audited views, acks and decisions.

Every read is scoped to the signed-in user's agency: an alert sent to another agency does not
exist for this user (the HTTP layer answers 404, never 403, so its existence is not disclosed).
A view or decision whose audit entry the broker did not acknowledge is refused.

Every write goes out through the user's own hub's `Outlet`: its audit journal and its ack
publisher authenticate as that hub, and the ack goes to that hub's `alert-acks.<hub>`, the only
ack topic its principal may write, so the router knows which hub acted from the topic.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from safehub.consumers.inbox.models import InboxAlert
from safehub.consumers.inbox.store import InboxStore, QueueFilter
from safehub.schemas.codec import encode
from safehub.schemas.records import AlertAck
from safehub.schemas.vocabulary import AckAction, AuditAction, Decision, LawfulBasis, Rationale
from safehub.services.audit.journal import Audit
from safehub.services.web.acks import AckPublisher, publish_one
from safehub.services.web.users import User


class NotFound(Exception):
    """No such alert for this user's agency."""


@dataclass(frozen=True, slots=True)
class Outlet:
    """What one hub writes, each as that hub's principal."""

    audit: Audit
    publisher: AckPublisher
    # The journal batches sends; requests run on a thread pool, so one request's flush
    # must cover its own entries: record-and-flush is one critical section per journal.
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    ack: AlertAck
    published: bool  # False: stored, and will be sent to the router when the broker is back


class Hub:
    def __init__(self, store: InboxStore, outlets: Mapping[str, Outlet],
                 clock: Callable[[], int]) -> None:
        self.store = store
        self.outlets = dict(outlets)
        self.clock = clock

    def outlet(self, user: User) -> Outlet:
        # Every user's hub has an outlet (they are made from the users file); a user without
        # one must not fall back to another hub's credentials.
        try:
            return self.outlets[user.agency]
        except KeyError:
            raise NotFound(user.agency) from None

    @property
    def publishers(self) -> dict[str, AckPublisher]:
        return {hub: o.publisher for hub, o in self.outlets.items()}

    def queue(self, user: User, flt: QueueFilter) -> list[InboxAlert]:
        return self.store.queue(user.agency, flt, self.clock())

    def view(self, user: User, notification_id: str) -> InboxAlert:
        row = self.store.alert(user.agency, notification_id)
        if row is None:
            raise NotFound(notification_id)
        now = self.clock()
        # A view's digest binds the record seen to the moment it was seen, so that two views
        # are two audit entries rather than one redelivered entry.
        digest = hashlib.sha256(row.digest + now.to_bytes(8, "big")).digest()
        out = self.outlet(user)
        with out.lock:
            out.audit.record(AuditAction.ALERT_VIEWED, row.alert_id, user.ref, digest, now)
            out.audit.flush()
        return row

    def act(self, user: User, notification_id: str, decision: Decision | None,
            basis: LawfulBasis | None = None, rationale: Rationale | None = None) -> Outcome:
        out = self.outlet(user)
        row = self.store.alert(user.agency, notification_id)
        if row is None:
            raise NotFound(notification_id)
        now = self.clock()
        action = AckAction.ACKNOWLEDGED if decision is None else AckAction.DECIDED
        ack = AlertAck(ack_id=uuid.uuid4().hex, alert_id=row.alert_id, agency_id=user.agency,
                       user_ref=user.ref, action=action, decision=decision, at=now,
                       lawful_basis=basis if decision is not None else None,
                       rationale=rationale if decision is not None else None)
        digest = hashlib.sha256(encode(ack)).digest()
        actions = [AuditAction.ALERT_ACKNOWLEDGED] if decision is None else [
            AuditAction.ALERT_DECIDED]
        if decision is Decision.REQUEST_REIDENTIFICATION:
            actions.append(AuditAction.REIDENTIFICATION_REQUESTED)
        # The audit entry first: a decision is stored (and so takes effect) only once the log
        # holds it. If storing then fails, the log shows a decision that the inbox does not,
        # which an auditor sees; the other order could leave a decision the log never saw.
        with out.lock:
            for action_name in actions:
                out.audit.record(action_name, row.alert_id, user.ref, digest, now)
            out.audit.flush()
        self.store.record_ack(notification_id, ack)
        return Outcome(ack, publish_one(self.store, out.publisher, ack, now))
