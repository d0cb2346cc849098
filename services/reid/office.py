"""One agency's re-identification office: its store, vault, case file, and its outlet to the
broker (one producer authenticated as the agency: responses to `reid-responses.<hub>`, audit).

Every answer goes the same way, whoever gives it (the officer's page, or the listener's
immediate "not found"): the response is sent and acknowledged by the broker, its audit entry is
acknowledged, and only then is the request marked decided. If the broker or the database is
down the request stays pending and the officer may try again; an answer re-sent after a failure
in between has the same response id, so the hub keeps one.

A request another agency received does not exist here (NotFound), whether or not it exists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer

from safehub import topics
from safehub.bus import send_and_confirm
from safehub.errors import ConfigError, ValidationError
from safehub.producers.vault import Reidentification
from safehub.schemas.codec import encode
from safehub.schemas.records import ReidRequest, ReidResponse
from safehub.schemas.vocabulary import AuditAction, DeclineReason, ReidOutcome
from safehub.services.audit.journal import AuditJournal
from safehub.services.reid import desk
from safehub.services.reid.casefile import CaseFile
from safehub.services.reid.desk import AlreadyDecided, DeskError, HandleRecords
from safehub.services.reid.sealing import binding, load_public_key, seal
from safehub.services.reid.store import PENDING, UNKNOWN, RequestStore, StoredRequest
from safehub.topics import reid_responses

Clock = Callable[[], int]
Resolve = Callable[[str, str], Reidentification | None]


class NotFound(Exception):
    """No such request for this agency."""


def audit_service(agency_id: str) -> str:
    """The audit log's service name for an agency's office (a slug of at most 64 chars)."""
    return f"reid-{agency_id}"[:64].rstrip("-")


@dataclass(frozen=True, slots=True)
class RequestView:
    stored: StoredRequest
    records: tuple[HandleRecords, ...]  # only the handles this agency issued

    @property
    def request(self) -> ReidRequest:
        return self.stored.request


@dataclass
class Office:
    agency_id: str
    prefix: str
    store: RequestStore
    resolve: Resolve  # the vault's resolve: answers only for the agency's own handles
    case_file: CaseFile
    hub_keys: Path  # the hubs' registered public keys, `<hub>.pub`
    producer: KafkaProducer  # as the agency's principal
    clock: Clock
    journal: AuditJournal = field(init=False)
    # The journal batches sends and decisions come from several threads (listener, web
    # workers): record-and-flush, and check-then-decide, are one critical section per agency.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.journal = AuditJournal(self.producer, topics.audit(self.prefix),
                                    audit_service(self.agency_id))

    def registered_key(self, hub_id: str) -> bytes:
        return load_public_key(self.hub_keys, hub_id)

    def records(self, request: ReidRequest) -> tuple[HandleRecords, ...]:
        return desk.known_records(self.agency_id, request.reid_handles, self.resolve,
                                  self.case_file)

    # -- reads ------------------------------------------------------------------------------
    def pending(self) -> list[StoredRequest]:
        return self.store.pending(self.agency_id)

    def view(self, request_id: str) -> RequestView:
        stored = self.store.get(self.agency_id, request_id)
        if stored is None:
            raise NotFound(request_id)
        return RequestView(stored, self.records(stored.request))

    # -- the listener's side ----------------------------------------------------------------
    def receive(self, request: ReidRequest, raw: bytes) -> bool:
        """Store a checked request and audit its receipt; answer NOT_FOUND at once if none of
        its handles is this agency's. True if it was new. The caller commits the offset after.
        ValidationError if the request id is known with other content (the caller dead-letters).
        """
        now = self.clock()
        known = bool(self.records(request))
        new = self.store.save(request, raw, now, PENDING if known else UNKNOWN)
        stored = self.store.get(self.agency_id, request.request_id)
        if not new and stored is not None and stored.raw != raw:
            # A redelivery is byte-identical; anything else under a known id is not the request
            # the agency received, and must not be taken for it.
            raise ValidationError("request_id", "already used for a different request")
        with self.lock:
            # Entry ids are derived from the cause, so a redelivery's entry is a known duplicate.
            self.journal.record(AuditAction.REIDENTIFICATION_RECEIVED, request.request_id,
                                request.hub_id, desk.digest(raw), now)
            self.journal.flush()
        if stored is not None and stored.status == UNKNOWN:
            self._answer(request.request_id, desk.AUTOMATIC, ReidOutcome.NOT_FOUND, None)
        return new

    # -- the officer's side -----------------------------------------------------------------
    def approve(self, request_id: str, officer: str) -> ReidResponse:
        return self._answer(request_id, officer, ReidOutcome.APPROVED, None)

    def decline(self, request_id: str, officer: str, reason: DeclineReason) -> ReidResponse:
        return self._answer(request_id, officer, ReidOutcome.DECLINED, reason)

    def _answer(self, request_id: str, officer: str, outcome: ReidOutcome,
                reason: DeclineReason | None) -> ReidResponse:
        with self.lock:
            stored = self.store.get(self.agency_id, request_id)
            if stored is None:
                raise NotFound(request_id)
            if stored.decided:
                raise AlreadyDecided("this request has already been answered")
            if stored.status == UNKNOWN and outcome is not ReidOutcome.NOT_FOUND:
                raise DeskError("none of the handles is this agency's: the service answers "
                                "\"not found\"")
            request = stored.request
            sealed = self._sealed(request) if outcome is ReidOutcome.APPROVED else None
            now = self.clock()
            response = desk.answer(request, outcome, officer, now, reason, sealed)
            value = encode(response)
            action = (AuditAction.REIDENTIFICATION_APPROVED if outcome is ReidOutcome.APPROVED
                      else AuditAction.REIDENTIFICATION_DECLINED)
            # Audited before it is sent, as the hub audits its request: an answer never leaves
            # without its entry, and the hub's "delivered" always follows it in the one-partition
            # log. If the send then fails, the officer is told and decides again; the entry that
            # stays names a response (by its digest, which carries the outcome and the reason)
            # that no hub received.
            self.journal.record(action, request.request_id, officer, desk.digest(value), now)
            self.journal.flush()
            send_and_confirm(self.producer, reid_responses(self.prefix, request.hub_id), value,
                             key=request.request_id.encode("ascii"))
            if not self.store.mark_decided(self.agency_id, request_id, outcome, reason, officer,
                                           now, response.response_id):
                raise AlreadyDecided("this request has already been answered")
            return response

    def _sealed(self, request: ReidRequest) -> bytes:
        identity = desk.shared_identity(self.records(request))
        try:
            key = self.registered_key(request.hub_id)
        except ConfigError:
            raise DeskError("the requesting hub no longer has a registered key here") from None
        return seal(identity, key, binding(request.request_id, request.alert_id,
                                           request.hub_id, request.agency_id))
