"""The agency's re-identification decisions: only handles the agency issued are answered for,
never another child; the identity shared is one child's, with the known records only; requests
are checked against the registry and the hub's registered key; an answer is given once.

The office and the officer's page run here on a real SQLite store and vault with a recording
stand-in for the broker (the real broker is in tests/integration/test_reid_agency.py)."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient

from safehub.errors import BrokerError, ValidationError
from safehub.producers.records import ChildIdentity
from safehub.producers.vault import Assignment, Vault
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, ReidRequest, ReidResponse
from safehub.schemas.vocabulary import (
    AuditAction,
    DeclineReason,
    LawfulBasis,
    ReidOutcome,
    ReidPurpose,
)
from safehub.services.reid import desk
from safehub.services.reid.casefile import CaseFile
from safehub.services.reid.desk import AlreadyDecided, AmbiguousIdentity, NoIdentity
from safehub.services.reid.office import NotFound, Office
from safehub.services.reid.officer_web import create_app
from safehub.services.reid.sealing import binding, ensure_hub_key, load_private_key, open_sealed
from safehub.services.reid.store import RequestStore
from safehub.services.web.users import Directory, User, hash_password
from tests.fixtures.topics import Rec

AGENCY, OTHER, HUB = "police-wy", "school-leeds", "csc-leeds"
NOW = 1_794_823_200_000
ALICE = ChildIdentity("Amélie", "O'Neill", "2012-03-04", "9434765919", "LS1 4AB")
BOB = ChildIdentity("Bob", "Smith", "2011-01-02", None, None)


@pytest.fixture
def vault(tmp_path: Path) -> Any:
    v = Vault.open(f"sqlite:///{tmp_path / 'vault.db'}")
    yield v
    v.close()


def handles(vault: Vault) -> dict[str, str]:
    """Alice has two records at the police, Bob one; the school has its own Alice."""
    a, _, b = vault.assign(AGENCY, [Assignment("ref:P-1", "INC-1", "1" * 32),
                                    Assignment("ref:P-1", "INC-2", "2" * 32),
                                    Assignment("ref:P-2", "INC-3", "3" * 32)])
    (s,) = vault.assign(OTHER, [Assignment("ref:S-1", "ATT-1", "4" * 32)])
    return {"alice": a, "bob": b, "school": s}


def case_file() -> CaseFile:
    return CaseFile({"INC-1": ALICE, "INC-2": ALICE, "INC-3": BOB, "ATT-1": ALICE})


def request(reid_handles: tuple[str, ...], key: bytes = b"\x01" * 32, **changes: Any
            ) -> ReidRequest:
    values: dict[str, Any] = dict(
        request_id="ab" * 16, alert_id="cd" * 16, hub_id=HUB, agency_id=AGENCY,
        reid_handles=reid_handles, lawful_basis=LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING,
        purpose=ReidPurpose.STRATEGY_MEETING, hub_public_key=key, user_ref="sw-1",
        requested_at=NOW)
    values.update(changes)
    return ReidRequest(**values)


# -- the pure desk -----------------------------------------------------------------------------

def test_unknown_handle_is_not_found_never_another_child(vault: Vault) -> None:
    handles(vault)
    assert desk.known_records(AGENCY, ["0" * 32], vault.resolve, case_file()) == ()


def test_a_handle_another_agency_issued_is_not_found(vault: Vault) -> None:
    h = handles(vault)
    assert desk.known_records(AGENCY, [h["school"]], vault.resolve, case_file()) == ()
    # ...though the school itself knows it.
    (mine,) = desk.known_records(OTHER, [h["school"]], vault.resolve, case_file())
    assert mine.record_refs == ("ATT-1",)


def test_partial_only_known_handles_are_shown_and_shared(vault: Vault) -> None:
    h = handles(vault)
    found = desk.known_records(AGENCY, [h["school"], "0" * 32, h["alice"]], vault.resolve,
                               case_file())
    assert [f.reid_handle for f in found] == [h["alice"]]
    assert found[0].person_ref == "P-1" and found[0].identity == ALICE
    shared = desk.shared_identity(found)
    assert shared.record_refs == ("INC-1", "INC-2")  # not ATT-1: the school's, not ours
    assert (shared.first_name, shared.surname, shared.nhs_number) == (
        "Amélie", "O'Neill", "9434765919")
    assert "Am" not in repr(found) and "Am" not in repr(shared)


def test_two_children_behind_the_handles_are_never_merged(vault: Vault) -> None:
    h = handles(vault)
    found = desk.known_records(AGENCY, [h["alice"], h["bob"]], vault.resolve, case_file())
    with pytest.raises(AmbiguousIdentity) as exc:
        desk.shared_identity(found)
    assert "Bob" not in str(exc.value)


def test_no_identity_in_the_case_file_is_not_shared(vault: Vault) -> None:
    h = handles(vault)
    found = desk.known_records(AGENCY, [h["alice"]], vault.resolve, CaseFile())
    assert found[0].identity is None
    with pytest.raises(NoIdentity):
        desk.shared_identity(found)
    with pytest.raises(NoIdentity):
        desk.shared_identity(())


def test_request_checks_name_the_rule_never_a_value() -> None:
    key = b"\x07" * 32

    def registered(hub: str) -> bytes:
        from safehub.errors import ConfigError
        if hub != HUB:
            raise ConfigError(f"no registered key for hub {hub}")
        return key

    hubs = {HUB, "csc-bradford"}
    desk.check_request(request(("a" * 32,), key), AGENCY, hubs, registered)
    cases = [
        (request(("a" * 32,), key), OTHER, "agency_id"),
        (request(("a" * 32,), key, hub_id="csc-nowhere"), AGENCY, "hub_id"),
        (request(("a" * 32,), key, hub_id="csc-bradford"), AGENCY, "hub_public_key"),
        (request(("a" * 32,), b"\x08" * 32), AGENCY, "hub_public_key"),
        (request((), key), AGENCY, "reid_handles"),
    ]
    for req, topic_agency, where in cases:
        with pytest.raises(ValidationError) as exc:
            desk.check_request(req, topic_agency, hubs, registered)
        assert exc.value.field == where
        assert "0707" not in str(exc.value) and "0808" not in str(exc.value)


def test_topic_agency() -> None:
    assert desk.agency_from_topic("t1.reid-requests.police-wy", "t1.") == AGENCY
    for bad in ("t1.alerts.police-wy", "reid-requests.police-wy", "t1.reid-requests.Bad.x"):
        with pytest.raises(ValidationError):
            desk.agency_from_topic(bad, "t1.")


def test_answers_are_well_formed_and_keep_their_id() -> None:
    req = request(("a" * 32,))
    sealed = desk.answer(req, ReidOutcome.APPROVED, "officer-1", NOW, sealed=b"\x00" * 60)
    declined = desk.answer(req, ReidOutcome.DECLINED, "officer-1", NOW + 1,
                           DeclineReason.BASIS_NOT_MET)
    assert sealed.response_id == declined.response_id  # one answer per request and agency
    assert re.fullmatch(r"[0-9a-f]{32}", sealed.response_id)
    assert desk.response_id_for(req.request_id, OTHER) != sealed.response_id
    for response in (sealed, declined,
                     desk.answer(req, ReidOutcome.NOT_FOUND, desk.AUTOMATIC, NOW)):
        assert decode(encode(response), ReidResponse) == response
    with pytest.raises(ValueError):
        desk.answer(req, ReidOutcome.DECLINED, "officer-1", NOW)
    with pytest.raises(ValueError):
        desk.answer(req, ReidOutcome.APPROVED, "officer-1", NOW)


# -- the office, with a recording broker --------------------------------------------------------

@dataclass
class Meta:
    topic: str
    partition: int = 0
    offset: int = 0


@dataclass
class Future:
    meta: Meta
    error: Exception | None = None

    def get(self, _timeout: float | None = None) -> Meta:
        if self.error is not None:
            raise self.error
        return self.meta


@dataclass
class Broker:
    """A KafkaProducer stand-in: records what was sent; `down` makes every send fail."""

    sent: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    headers: list[dict[str, bytes]] = field(default_factory=list)
    down: bool = False

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: Any = None) -> Future:
        from kafka.errors import KafkaTimeoutError

        if self.down:
            return Future(Meta(topic), KafkaTimeoutError("down"))
        self.sent.append((topic, key, value))
        self.headers.append(dict(headers or []))
        return Future(Meta(topic, 0, len(self.sent)))

    def flush(self, _timeout: float | None = None) -> None:
        pass

    def on(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.sent if t == topic]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    ensure_hub_key(tmp_path / "private", tmp_path / "public", HUB)
    return tmp_path


def office(tmp_path: Path, keys: Path, vault: Vault, broker: Broker,
           agency: str = AGENCY) -> Office:
    store = RequestStore.open(f"sqlite:///{tmp_path / 'reid.db'}")
    return Office(agency, "t.", store, vault.resolve, case_file(), keys / "public",
                  broker, lambda: NOW)


def test_office_answers_not_found_at_once_and_audits_it(tmp_path: Path, keys: Path,
                                                        vault: Vault) -> None:
    h = handles(vault)
    broker = Broker()
    o = office(tmp_path, keys, vault, broker)
    key = o.registered_key(HUB)
    req = request((h["school"], "0" * 32), key)
    raw = encode(req)
    assert o.receive(req, raw) is True
    (value,) = broker.on(f"t.reid-responses.{HUB}")
    response = decode(value, ReidResponse)
    assert response.outcome is ReidOutcome.NOT_FOUND and response.sealed_identity is None
    audit = [decode(v, AuditEntry) for v in broker.on("t.audit")]
    assert [(a.action, a.actor) for a in audit] == [
        (AuditAction.REIDENTIFICATION_RECEIVED, HUB),
        (AuditAction.REIDENTIFICATION_DECLINED, desk.AUTOMATIC)]
    assert audit[0].digest == hashlib.sha256(raw).digest()
    assert audit[1].digest == hashlib.sha256(value).digest()  # the outcome is in the digest
    assert audit[0].service == "reid-police-wy"
    assert o.pending() == []
    # A redelivery stores nothing new and answers nothing again.
    assert o.receive(req, raw) is False
    assert len(broker.on(f"t.reid-responses.{HUB}")) == 1
    # Another request under the same id is not taken for it.
    with pytest.raises(ValidationError) as exc:
        o.receive(request((h["alice"],), key), encode(request((h["alice"],), key)))
    assert exc.value.field == "request_id"


def test_office_approval_opens_only_at_the_hub_for_this_request(
        tmp_path: Path, keys: Path, vault: Vault) -> None:
    h = handles(vault)
    broker = Broker()
    o = office(tmp_path, keys, vault, broker)
    req = request((h["alice"], h["school"]), o.registered_key(HUB))
    o.receive(req, encode(req))
    assert [s.request.request_id for s in o.pending()] == [req.request_id]
    assert broker.on(f"t.reid-responses.{HUB}") == []
    response = o.approve(req.request_id, "officer-1")
    (value,) = broker.on(f"t.reid-responses.{HUB}")
    assert decode(value, ReidResponse) == response
    private = load_private_key(keys / "private", HUB)
    info = binding(req.request_id, req.alert_id, HUB, AGENCY)
    assert response.sealed_identity is not None
    opened = open_sealed(response.sealed_identity, private, info)
    assert opened.first_name == ALICE.first_name and opened.record_refs == ("INC-1", "INC-2")
    from safehub.services.reid.sealing import SealError
    with pytest.raises(SealError):
        open_sealed(response.sealed_identity, X25519PrivateKey.generate(), info)
    with pytest.raises(SealError):
        open_sealed(response.sealed_identity, private,
                    binding(req.request_id, "ef" * 16, HUB, AGENCY))
    with pytest.raises(AlreadyDecided):
        o.decline(req.request_id, "officer-2", DeclineReason.OTHER)
    assert len(broker.on(f"t.reid-responses.{HUB}")) == 1
    audit = [decode(v, AuditEntry).action for v in broker.on("t.audit")]
    assert audit == [AuditAction.REIDENTIFICATION_RECEIVED,
                     AuditAction.REIDENTIFICATION_APPROVED]
    with pytest.raises(NotFound):
        o.approve("ee" * 16, "officer-1")


def test_broker_down_leaves_the_request_pending(tmp_path: Path, keys: Path,
                                                vault: Vault) -> None:
    h = handles(vault)
    broker = Broker()
    o = office(tmp_path, keys, vault, broker)
    req = request((h["bob"],), o.registered_key(HUB))
    o.receive(req, encode(req))
    broker.down = True
    with pytest.raises(BrokerError):
        o.decline(req.request_id, "officer-1", DeclineReason.PREJUDICES_INVESTIGATION)
    assert len(o.pending()) == 1
    broker.down = False
    response = o.decline(req.request_id, "officer-1", DeclineReason.PREJUDICES_INVESTIGATION)
    assert response.decline_reason is DeclineReason.PREJUDICES_INVESTIGATION
    assert o.pending() == []


# -- the officer's page ------------------------------------------------------------------------

def test_officer_page_scoped_csrf_and_decide_once(tmp_path: Path, keys: Path,
                                                  vault: Vault) -> None:
    h = handles(vault)
    broker = Broker()
    police = office(tmp_path, keys, vault, broker)
    school = Office(OTHER, "t.", police.store, vault.resolve, case_file(), keys / "public",
                    broker, lambda: NOW)
    mine = request((h["alice"],), police.registered_key(HUB))
    theirs = request((h["school"],), police.registered_key(HUB), request_id="ef" * 16,
                     agency_id=OTHER)
    police.receive(mine, encode(mine))
    school.receive(theirs, encode(theirs))
    password = hash_password("pw")
    directory = Directory({"off-1": User("off-1", AGENCY, password),
                           "off-2": User("off-2", OTHER, password)})
    client = TestClient(create_app({AGENCY: police, OTHER: school}, directory, "s" * 32))
    assert client.get("/api/requests").status_code == 401
    assert client.post("/login", data={"ref": "off-1", "password": "pw"}).status_code == 200
    listed = client.get("/api/requests").json()
    assert [r["request_id"] for r in listed] == [mine.request_id]
    assert client.get(f"/api/requests/{theirs.request_id}").status_code == 404
    assert client.get(f"/requests/{theirs.request_id}").status_code == 404
    queue = client.get("/requests").text
    assert mine.request_id in queue and theirs.request_id not in queue
    assert "DPA 2018 Schedule 8 paragraph 4" in queue and "Strategy meeting" in queue
    assert client.post(f"/api/requests/{theirs.request_id}/approve").status_code == 404
    detail = client.get(f"/api/requests/{mine.request_id}").json()
    assert detail["known"][0]["record_refs"] == ["INC-1", "INC-2"]
    assert "Am" not in str(detail)  # the API gives references, never the identity
    page = client.get(f"/requests/{mine.request_id}").text
    assert "O&#39;Neill" in page and "INC-2" in page  # the officer's own data, escaped
    bad = client.post(f"/requests/{mine.request_id}/decline",
                      data={"csrf": "wrong", "reason": "OTHER"}, follow_redirects=False)
    assert bad.status_code == 400
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    done = client.post(f"/requests/{mine.request_id}/decline",
                       data={"csrf": token.group(1), "reason": "BASIS_NOT_MET"},
                       follow_redirects=False)
    assert done.status_code == 303
    again = client.post(f"/api/requests/{mine.request_id}/approve")
    assert again.status_code == 409
    responses = [decode(v, ReidResponse) for v in broker.on(f"t.reid-responses.{HUB}")]
    assert [(r.outcome, r.decline_reason) for r in responses] == [
        (ReidOutcome.DECLINED, DeclineReason.BASIS_NOT_MET)]
    broker.down = True
    client.post("/logout")
    client.post("/login", data={"ref": "off-2", "password": "pw"})
    down = client.post(f"/api/requests/{theirs.request_id}/decline", json={"reason": "OTHER"})
    assert down.status_code == 503
    broker.down = False
    ok = client.post(f"/api/requests/{theirs.request_id}/approve")
    assert ok.status_code == 200 and ok.json()["outcome"] == "APPROVED"


def test_not_found_is_never_pending_and_survives_a_broker_outage(
        tmp_path: Path, keys: Path, vault: Vault) -> None:
    handles(vault)
    broker = Broker(down=True)
    o = office(tmp_path, keys, vault, broker)
    req = request(("0" * 32,), o.registered_key(HUB))
    with pytest.raises(BrokerError):  # the listener seeks back and reads it again
        o.receive(req, encode(req))
    assert o.pending() == []  # stored, but not the officer's to decide
    broker.down = False
    with pytest.raises(desk.DeskError):
        o.decline(req.request_id, "officer-1", DeclineReason.OTHER)
    assert o.receive(req, encode(req)) is False  # the redelivery answers it
    (value,) = broker.on(f"t.reid-responses.{HUB}")
    assert decode(value, ReidResponse).outcome is ReidOutcome.NOT_FOUND


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reid.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_store_keeps_a_request_once_and_a_decision_once(store_url: str) -> None:
    store = RequestStore.open(store_url)
    agency = "police-" + uuid.uuid4().hex[:8]  # other runs may share a PostgreSQL database
    req = request(("a" * 32,), agency_id=agency, request_id=uuid.uuid4().hex)
    try:
        assert store.save(req, encode(req), NOW) is True
        assert store.save(req, encode(req), NOW + 5) is False
        assert [s.request for s in store.pending(agency)] == [req]
        assert store.get(OTHER, req.request_id) is None
        assert store.mark_decided(agency, req.request_id, ReidOutcome.DECLINED,
                                  DeclineReason.OTHER, "officer-1", NOW, "f" * 32) is True
        assert store.mark_decided(agency, req.request_id, ReidOutcome.APPROVED, None,
                                  "officer-2", NOW, "f" * 32) is False
        stored = store.get(agency, req.request_id)
        assert stored is not None and stored.decided
        assert (stored.outcome, stored.decline_reason, stored.officer, stored.received_at) == (
            ReidOutcome.DECLINED, DeclineReason.OTHER, "officer-1", NOW)
        assert store.pending(agency) == []
    finally:
        store.close()


# -- the listener, with a scripted consumer -----------------------------------------------------

@dataclass
class Consumer:
    """A KafkaConsumer stand-in: hands out one batch per poll, records seeks and commits."""

    batches: list[dict[Any, list[Rec]]]
    seeks: list[tuple[Any, int]] = field(default_factory=list)
    commits: list[dict[Any, Any]] = field(default_factory=list)

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[Rec]]:
        return self.batches.pop(0) if self.batches else {}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def position(self, _tp: Any, timeout_ms: int | None = None) -> int:
        return 0

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.append(offsets)

    def close(self) -> None:
        pass


def test_listener_dead_letters_with_reasons_and_commits_only_after_the_rows(
        tmp_path: Path, keys: Path, vault: Vault) -> None:
    import threading

    from kafka import TopicPartition

    from safehub.consumers.deadletter import HEADER_ERROR_MESSAGE, DeadLetterSink
    from safehub.consumers.inbox.consumer import RetryPolicy
    from safehub.services.reid.listener import RequestListener

    h = handles(vault)
    broker = Broker()
    o = office(tmp_path, keys, vault, broker)
    topic = f"t.reid-requests.{AGENCY}"
    tp = TopicPartition(topic, 0)
    good = request((h["alice"],), o.registered_key(HUB))
    foreign = request((h["alice"],), o.registered_key(HUB), request_id="ef" * 16,
                      hub_id="csc-nowhere")
    batch = [Rec(topic, 0, 0, b"k", encode(good)), Rec(topic, 0, 1, b"k", b"\x00junk"),
             Rec(topic, 0, 2, b"k", encode(foreign))]
    consumer = Consumer([{tp: batch}, {tp: batch}])
    sink = DeadLetterSink(broker, "t.deadletter")
    listener = RequestListener(consumer, o, sink, {HUB}, RetryPolicy(0.01, 0.02))
    broker.down = True  # the receipt's audit entry is not acknowledged: nothing committed
    assert listener.step(threading.Event()) == 0
    assert consumer.seeks == [(tp, 0)] and consumer.commits == []
    broker.down = False
    assert listener.step(threading.Event()) == 3
    assert len(consumer.commits) == 1 and consumer.commits[0][tp].offset == 3
    assert [s.request for s in o.pending()] == [good]
    reasons = [hs[HEADER_ERROR_MESSAGE].decode() for (t, _, _), hs in
               zip(broker.sent, broker.headers, strict=True) if t == "t.deadletter"]
    assert len(reasons) == 2 and reasons[1] == "hub_id: not a hub in the agency registry"
    assert listener.deadlettered == 2 and listener.received == 1


def test_database_down_is_a_clear_503(tmp_path: Path, keys: Path, vault: Vault) -> None:
    from safehub.consumers.inbox.database import make_engine

    o = office(tmp_path, keys, vault, Broker())
    o.store = RequestStore(make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"))
    directory = Directory({"off-1": User("off-1", AGENCY, hash_password("pw"))})
    client = TestClient(create_app({AGENCY: o}, directory, "s" * 32))
    client.post("/login", data={"ref": "off-1", "password": "pw"})
    down = client.get("/api/requests")
    assert down.status_code == 503 and "database is unavailable" in down.json()["detail"]
    assert client.get("/requests").status_code == 503
