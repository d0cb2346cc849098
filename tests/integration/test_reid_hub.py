"""The hub's side of re-identification on the real secure broker, with the agencies played by
their own principals: requests reach only the agencies asked, answers are accepted only when
they open with this hub's key for that very request, and every step is in the audit log."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from safehub.bus import make_producer, send_and_confirm
from safehub.consumers.deadletter import HEADER_ERROR_MESSAGE
from safehub.consumers.inbox.command import hub_inbox
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.requests import ReidRequests
from safehub.consumers.inbox.store import InboxStore
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import (
    AuditEntry,
    ReidentificationRef,
    ReidRequest,
    ReidResponse,
)
from safehub.schemas.vocabulary import (
    AuditAction,
    DeclineReason,
    LawfulBasis,
    ReidOutcome,
    ReidPurpose,
)
from safehub.services.reid.sealing import (
    SealError,
    SharedIdentity,
    binding,
    ensure_hub_key,
    load_private_key,
    open_sealed,
    seal,
)
from safehub.services.web.command import outlets
from safehub.services.web.hub import Hub
from safehub.services.web.reidentification import (
    HubKeys,
    HubReidentification,
    KafkaRequestPublisher,
    NoSuchRequest,
    ViewReason,
)
from safehub.services.web.users import User
from safehub.topics import reid_requests, reid_responses
from tests.conftest import Namespace
from tests.fixtures.access import probe_consume
from tests.fixtures.clock import ManualClock
from tests.fixtures.inbox import NOW, routed
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
HUB, OTHER_HUB = "csc-leeds", "csc-bradford"
POLICE, HEALTH, SCHOOL = "police-wy", "health-leeds", "school-leeds"
CHILD = SharedIdentity("Kayleigh", "Marsh-Oduya", "2011-03-14", "9434765919", "LS96AB",
                       ("WY-2026-0042",))
RETENTION_MS = 60_000


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def read_requests(ns: Namespace, agency: str, count: int) -> list[ReidRequest]:
    reader = TopicReader(ns.connection(agency), reid_requests(ns.prefix, agency))
    wait_for(lambda: len(reader.poll()) >= count, f"{count} request(s) to {agency}")
    return [decode(r.value, ReidRequest) for r in reader.poll()]


def answer(ns: Namespace, agency: str, response: ReidResponse) -> None:
    producer = make_producer(ns.connection(agency), f"test-{agency}")
    try:
        send_and_confirm(producer, reid_responses(ns.prefix, response.hub_id), encode(response),
                         key=response.request_id.encode())
    finally:
        producer.close()


def response_to(request: ReidRequest, outcome: ReidOutcome, sealed: bytes | None = None,
                reason: DeclineReason | None = None) -> ReidResponse:
    return ReidResponse(uuid.uuid4().hex, request.request_id, request.alert_id, request.hub_id,
                        request.agency_id, outcome, reason, sealed, "officer-1", NOW + 1000)


def test_the_hub_asks_two_agencies_one_approves_one_declines_and_forgeries_are_refused(
    secure_namespace: Callable[..., Namespace], tmp_path: Path,
) -> None:
    ns = secure_namespace(agencies={POLICE: "POLICE", HEALTH: "HEALTH", SCHOOL: "EDUCATION"},
                          hubs=[HUB, OTHER_HUB])
    private, public = tmp_path / "private", tmp_path / "public"
    hub_public = ensure_hub_key(private, public, HUB)
    ensure_hub_key(private, public, OTHER_HUB)
    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    note = routed(1)
    alert = replace(note.alert, reidentification=(
        ReidentificationRef(POLICE, "1" * 32), ReidentificationRef(HEALTH, "2" * 32)))
    note = replace(note, receiver_agency=HUB, alert=alert)
    note = replace(note, notification_id=uuid.uuid4().hex)
    store.save([(note, encode(note))], NOW)
    clock = ManualClock(NOW)
    hub_outlets, producers = outlets({HUB: ns.connection(HUB)}, ns.prefix)
    hub = Hub(store, hub_outlets, clock)
    keys = {HUB: HubKeys(load_private_key(private, HUB),
                         KafkaRequestPublisher(producers[HUB], ns.prefix))}
    reid = HubReidentification(hub, ReidRequests(store.engine), keys)
    user = User("sw-leeds-1", HUB, "unused")
    inbox = hub_inbox(ns.connection(HUB), HUB, store, ns.prefix, clock=clock,
                      reid_key=load_private_key(private, HUB), retention_ms=RETENTION_MS)
    stop = threading.Event()
    thread = threading.Thread(target=inbox.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # Only contributing agencies may be asked; the school left no handle on this alert.
        with pytest.raises(Exception, match="contributed"):
            reid.ask(user, note.notification_id, [SCHOOL], LawfulBasis.CONSENT,
                     ReidPurpose.MASH_RESEARCH, None)
        with pytest.raises(Exception, match="basis_reason"):
            reid.ask(user, note.notification_id, [POLICE], LawfulBasis.OTHER,
                     ReidPurpose.MASH_RESEARCH, "  ")
        rows = reid.ask(user, note.notification_id, [POLICE, HEALTH],
                        LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING, ReidPurpose.STRATEGY_MEETING,
                        None)
        assert all(r.published_at is not None for r in rows)

        (to_police,) = read_requests(ns, POLICE, 1)
        (to_health,) = read_requests(ns, HEALTH, 1)
        assert to_police.reid_handles == ("1" * 32,) and to_health.reid_handles == ("2" * 32,)
        assert to_police.hub_public_key == hub_public and to_police.hub_id == HUB
        # The school, not asked, cannot read either request topic.
        for topic in (reid_requests(ns.prefix, POLICE), reid_responses(ns.prefix, HUB)):
            refused = probe_consume(ns.connection(SCHOOL), [topic])[topic]
            assert not refused.allowed and "AuthorizationFailed" in refused.detail, refused
        refused = probe_consume(ns.connection(OTHER_HUB), [reid_responses(ns.prefix, HUB)])
        assert not any(o.allowed for o in refused.values()), refused

        sealed = seal(CHILD, to_police.hub_public_key, binding(
            to_police.request_id, to_police.alert_id, HUB, POLICE))
        # Forgeries first: moved to the other request, tampered, and from the wrong agency.
        moved = response_to(to_health, ReidOutcome.APPROVED, sealed)
        tampered = response_to(to_police, ReidOutcome.APPROVED,
                               sealed[:-1] + bytes([sealed[-1] ^ 1]))
        answer(ns, HEALTH, moved)
        answer(ns, POLICE, tampered)
        answer(ns, SCHOOL, replace(response_to(to_police, ReidOutcome.DECLINED,
                                               reason=DeclineReason.OTHER), agency_id=SCHOOL))
        answer(ns, POLICE, response_to(to_police, ReidOutcome.APPROVED, sealed))
        answer(ns, HEALTH, response_to(to_health, ReidOutcome.DECLINED,
                                       reason=DeclineReason.NOT_NECESSARY_OR_PROPORTIONATE))

        def statuses() -> dict[str, str]:
            return {r.agency_id: r.status for r in reid.of_alert(user, note.notification_id)}
        wait_for(lambda: statuses() == {POLICE: "APPROVED", HEALTH: "DECLINED"}, "answers")

        dead = TopicReader(ns.kafka, ns.deadletter)
        wait_for(lambda: len(dead.poll()) >= 3, "three refused answers")
        reasons = sorted(dict(r.headers)[HEADER_ERROR_MESSAGE].decode() for r in dead.poll())
        assert reasons == [
            "agency_id: not the agency the request went to",
            "sealed_identity: does not open with this hub's key for this request "
            "(tampered or moved)",
            "sealed_identity: does not open with this hub's key for this request "
            "(tampered or moved)",
        ]
        (approved,) = [r for r in reid.of_alert(user, note.notification_id)
                       if r.status == "APPROVED"]
        assert approved.sealed_identity == sealed  # kept sealed, never in plaintext
        with pytest.raises(SealError):
            open_sealed(sealed, load_private_key(private, OTHER_HUB), binding(
                to_police.request_id, to_police.alert_id, HUB, POLICE))
        # Another hub's user sees nothing of it.
        other_user = User("sw-bradford-1", OTHER_HUB, "unused")
        assert reid.of_alert(other_user, note.notification_id) == []
        with pytest.raises(NoSuchRequest):
            reid.open(other_user, note.notification_id, approved.request_id,
                      ViewReason.STRATEGY_MEETING)

        assert reid.open(user, note.notification_id, approved.request_id,
                         ViewReason.STRATEGY_MEETING) == CHILD

        # Past retention, the identity is dropped.
        clock.now += RETENTION_MS + 1
        wait_for(lambda: statuses()[POLICE] == "EXPIRED", "expiry")
        (expired,) = [r for r in reid.of_alert(user, note.notification_id)
                      if r.agency_id == POLICE]
        assert expired.sealed_identity is None

        audit = TopicReader(ns.kafka, ns.audit)
        wanted = [AuditAction.REIDENTIFICATION_REQUESTED, AuditAction.REIDENTIFICATION_REQUESTED,
                  AuditAction.REIDENTIFICATION_REJECTED, AuditAction.REIDENTIFICATION_REJECTED,
                  AuditAction.REIDENTIFICATION_REJECTED,
                  AuditAction.REIDENTIFICATION_DELIVERED, AuditAction.REIDENTIFICATION_DELIVERED,
                  AuditAction.REIDENTIFICATION_VIEWED, AuditAction.REIDENTIFICATION_EXPIRED]
        wait_for(lambda: len(audit.poll()) >= len(wanted), "audit entries")
        entries = [decode(r.value, AuditEntry) for r in audit.poll()]
        assert sorted(e.action for e in entries) == sorted(wanted)
        order = [e.action for e in entries]
        assert order.index(AuditAction.REIDENTIFICATION_REQUESTED) < order.index(
            AuditAction.REIDENTIFICATION_DELIVERED) < order.index(
            AuditAction.REIDENTIFICATION_VIEWED) < order.index(
            AuditAction.REIDENTIFICATION_EXPIRED)
        assert {e.subject_id for e in entries if e.action is not
                AuditAction.REIDENTIFICATION_REJECTED} == {note.alert.alert_id}
        for raw in [r.value for r in audit.poll()] + [r.value for r in dead.poll()]:
            for part in (CHILD.first_name, CHILD.surname, CHILD.nhs_number or "", "2011-03-14"):
                assert part.encode() not in raw
    finally:
        stop.set()
        thread.join(10)
        inbox.close()
        for p in producers.values():
            p.close()

