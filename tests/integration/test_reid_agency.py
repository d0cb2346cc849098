"""The agency side of re-identification on the real secure broker, run as `safehub reid serve`
runs it (settings from its flags and environment, `serve`, each agency its own principal).

A hub writes requests to two agencies served by one process; the police officer approves and
the answer opens only with the asking hub's key; the school's officer declines with a reason;
a handle the agency did not issue is answered "not found" at once; a request with the wrong hub
key, for another agency, or not decodable is dead-lettered with its reason; a third agency can
read neither the requests nor the answers. No identity appears in the service's log, the audit
log or the dead letters."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kafka.admin import ACL

from safehub.bus import make_admin, make_producer, send_all
from safehub.consumers.deadletter import HEADER_ERROR_MESSAGE, HEADER_SOURCE_TOPIC
from safehub.deploy.access import apply, cluster_grants, to_acl
from safehub.deploy.acl import Operation, grants
from safehub.producers.exports import EXAMPLES_DIR
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
from safehub.services.reid.casefile import CaseFile
from safehub.services.reid.command import serve, settings_from
from safehub.services.reid.sealing import (
    SealError,
    binding,
    ensure_hub_key,
    load_private_key,
    open_sealed,
)
from safehub.services.web.users import hash_password
from safehub.topics import reid_requests, reid_responses
from tests.conftest import Namespace
from tests.fixtures.access import assert_read_refused
from tests.fixtures.cli import SAFEHUB
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
POLICE, SCHOOL, HEALTH = "police-wy", "school-leeds", "health-leeds"
HUB, OTHER_HUB = "csc-leeds", "csc-bradford"
ALICE = ChildIdentity("Zoë", "Fitzgerald-Kaur", "2011-07-19", "9434765870", "LS6 2QT")
# The school's own export (producers/examples/education.csv): its identities, as it holds them.
SCHOOL_IDENTITY = ("Chloë", "O'Brien-Walsh", "2009-03-14", "996 030 8243", "9960308243",
                   "LS9 8AB")
IDENTITY_STRINGS = ("Zoë", "Fitzgerald-Kaur", "2011-07-19", "9434765870", "LS6 2QT",
                    *SCHOOL_IDENTITY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@dataclass
class World:
    ns: Namespace
    tmp: Path
    handles: dict[str, str]
    base: str


def registry_file(ns: Namespace, path: Path) -> Path:
    lines = []
    for p in ns.registry.parties:
        lines += ["[[party]]", f'id = "{p.id}"', f'kind = "{p.kind.value}"']
        if p.sector is not None:
            lines.append(f'sector = "{p.sector.value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Agencies:
    """What the agencies' service is given: vaults, officers, the hubs' keys, the registry."""

    handles: dict[str, str]
    vaults: Path
    users: Path
    hub_keys: Path
    registry: Path


def prepare(ns: Namespace, tmp_path: Path) -> Agencies:
    for hub in (HUB, OTHER_HUB):
        ensure_hub_key(tmp_path / "hub-private", tmp_path / "hub-keys", hub)
    vaults = tmp_path / "vaults"
    vaults.mkdir()
    police, school = (Vault.open(f"sqlite:///{vaults / (a + '.sqlite')}")
                      for a in (POLICE, SCHOOL))
    alice, bob = police.assign(POLICE, [Assignment("ref:WY-1", "INC-1", "1" * 32),
                                        Assignment("ref:WY-1", "INC-2", "2" * 32),
                                        Assignment("ref:WY-2", "INC-3", "3" * 32)])[::2]
    (chloe,) = set(school.assign(SCHOOL, [Assignment("ref:A123456789012", "C-2024-0441",
                                                     "4" * 32),
                                          Assignment("ref:A123456789012", "C-2024-0447",
                                                     "5" * 32)]))
    police.close()
    school.close()
    users = tmp_path / "officers.toml"
    users.write_text("".join(
        f'[[user]]\nref = "{ref}"\nagency = "{agency}"\npassword = "{hash_password("pw")}"\n'
        for ref, agency in (("off-police", POLICE), ("off-school", SCHOOL),
                            ("off-health", HEALTH))))
    return Agencies({"alice": alice, "bob": bob, "chloe": chloe}, vaults, users,
                    tmp_path / "hub-keys", registry_file(ns, tmp_path / "registry.toml"))


def agency_env(ns: Namespace) -> dict[str, str]:
    """The Kafka settings with no principal named: each agency connects as itself."""
    env = {**ns.env(POLICE)}
    del env["SAFEHUB_KAFKA_PRINCIPAL"], env["SAFEHUB_KAFKA_PASSWORD_FILE"]
    return env


def page_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/login").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def world(secure_namespace: Callable[..., Namespace], tmp_path: Path,
          caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    ns = secure_namespace(agencies={POLICE: "POLICE", SCHOOL: "EDUCATION", HEALTH: "HEALTH"},
                          hubs=[HUB, OTHER_HUB])
    a = prepare(ns, tmp_path)
    port = free_port()
    args = argparse.Namespace(
        agency=[POLICE, SCHOOL], users=str(a.users), hub_keys=str(a.hub_keys),
        listen=f"127.0.0.1:{port}", database=f"sqlite:///{tmp_path / 'reid.db'}", vault=[],
        vault_dir=str(a.vaults), export=[f"{SCHOOL}={EXAMPLES_DIR / 'education.csv'}"],
        mapping=[], registry=str(a.registry),
        # Plain HTTP: these tests are about the agency's logic; HTTPS, the default, is
        # tests/e2e/test_web_tls.py and test_reidentification.py.
        plain_http=True)
    env = agency_env(ns)
    settings = settings_from(args, env)
    assert len(settings.case_files[SCHOOL]) > 0
    # The police hand their records over in memory, as the demo does.
    settings = dataclasses.replace(settings, case_files={
        **settings.case_files, POLICE: CaseFile({"INC-1": ALICE, "INC-2": ALICE})})
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="kafka")
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings, stop), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until("the officers' page", lambda: page_up(base))
    try:
        yield World(ns, tmp_path, a.handles, base)
    finally:
        stop.set()
        thread.join(timeout=60)


def officer(w: World, ref: str) -> httpx.Client:
    client = httpx.Client(base_url=w.base)
    assert client.post("/login", data={"ref": ref, "password": "pw"}).status_code in (200, 303)
    return client


def hub_key(w: World, hub: str) -> bytes:
    return bytes.fromhex((w.tmp / "hub-keys" / f"{hub}.pub").read_text().strip())


def ask(agency: str, handles: tuple[str, ...], key: bytes, **changes: object) -> ReidRequest:
    values: dict[str, object] = dict(
        request_id=uuid.uuid4().hex, alert_id=uuid.uuid4().hex, hub_id=HUB, agency_id=agency,
        reid_handles=handles, lawful_basis=LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING,
        purpose=ReidPurpose.SECTION_47_ENQUIRY, hub_public_key=key, user_ref="sw-leeds-1",
        requested_at=int(time.time() * 1000))
    values.update(changes)
    return ReidRequest(**values)  # type: ignore[arg-type]


def send_as_hub(w: World, records: list[tuple[str, bytes, bytes]]) -> None:
    """As the hub: the only kind of principal that may write a request topic."""
    producer = make_producer(w.ns.connection(HUB), "test-hub-requests")
    try:
        send_all(producer, [(topic, key, value, None) for topic, key, value in records])
    finally:
        producer.close()


def pending(client: httpx.Client) -> set[str]:
    response = client.get("/api/requests")
    assert response.status_code == 200
    return {r["request_id"] for r in response.json()}


def test_requests_answered_sealed_declined_not_found_and_dead_lettered(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    w = world
    key = hub_key(w, HUB)
    approve = ask(POLICE, (w.handles["alice"], w.handles["chloe"]), key)
    decline = ask(SCHOOL, (w.handles["chloe"],), key)
    unknown = ask(POLICE, ("0" * 32, w.handles["chloe"]), key)  # not a police handle at all
    wrong_key = ask(POLICE, (w.handles["alice"],), hub_key(w, OTHER_HUB))
    misdirected = ask(SCHOOL, (w.handles["chloe"],), key)  # on the police topic
    police_topic, school_topic = reid_requests(w.ns.prefix, POLICE), reid_requests(
        w.ns.prefix, SCHOOL)
    send_as_hub(w, [(police_topic, r.request_id.encode(), encode(r))
                    for r in (approve, unknown, wrong_key, misdirected)]
                + [(police_topic, b"junk", b"\x00not avro"),
                   (school_topic, decline.request_id.encode(), encode(decline))])
    police, school = officer(w, "off-police"), officer(w, "off-school")
    # Each officer sees their own agency's requests only; "not found" is answered at once.
    wait_until("the police request", lambda: pending(police) == {approve.request_id})
    wait_until("the school request", lambda: pending(school) == {decline.request_id})
    assert police.get(f"/api/requests/{decline.request_id}").status_code == 404
    assert police.post(f"/api/requests/{decline.request_id}/approve").status_code == 404
    detail = police.get(f"/api/requests/{approve.request_id}").json()
    assert [h["record_refs"] for h in detail["known"]] == [["INC-1", "INC-2"]]
    page = police.get(f"/requests/{approve.request_id}").text
    assert ALICE.surname in page  # the officer's own records, on the officer's own page
    assert "C-2024-0441" not in page  # the school's handle is not the police's to answer

    answered = police.post(f"/api/requests/{approve.request_id}/approve")
    assert answered.status_code == 200, answered.text
    assert police.post(f"/api/requests/{approve.request_id}/decline",
                       json={"reason": "OTHER"}).status_code == 409
    declined = school.post(f"/api/requests/{decline.request_id}/decline",
                           json={"reason": "SHARED_BY_OTHER_ROUTE"})
    assert declined.status_code == 200 and declined.json()["outcome"] == "DECLINED"
    assert pending(police) == set() and pending(school) == set()

    # The answers, as the hub reads them.
    reader = TopicReader(w.ns.connection(HUB), reid_responses(w.ns.prefix, HUB))
    wait_until("three answers", lambda: len(reader.decoded(ReidResponse)) >= 3)
    raw_answers = [r.value for r in reader.records]
    answers = {a.request_id: a for a in reader.decoded(ReidResponse)}
    reader.close()
    assert set(answers) == {approve.request_id, decline.request_id, unknown.request_id}
    sealed = answers[approve.request_id]
    assert sealed.outcome is ReidOutcome.APPROVED and sealed.sealed_identity is not None
    info = binding(approve.request_id, approve.alert_id, HUB, POLICE)
    opened = open_sealed(sealed.sealed_identity, load_private_key(w.tmp / "hub-private", HUB),
                         info)
    assert (opened.first_name, opened.surname, opened.nhs_number, opened.record_refs) == (
        ALICE.first_name, ALICE.surname, ALICE.nhs_number, ("INC-1", "INC-2"))
    with pytest.raises(SealError):
        open_sealed(sealed.sealed_identity, load_private_key(w.tmp / "hub-private", OTHER_HUB),
                    info)
    with pytest.raises(SealError):  # not onto another alert either
        open_sealed(sealed.sealed_identity, load_private_key(w.tmp / "hub-private", HUB),
                    binding(approve.request_id, unknown.alert_id, HUB, POLICE))
    no = answers[decline.request_id]
    assert (no.outcome, no.decline_reason, no.sealed_identity, no.user_ref) == (
        ReidOutcome.DECLINED, DeclineReason.SHARED_BY_OTHER_ROUTE, None, "off-school")
    missing = answers[unknown.request_id]
    assert (missing.outcome, missing.sealed_identity) == (ReidOutcome.NOT_FOUND, None)

    # Dead letters, with their reasons (only operators, here the admin, read them).
    dl = TopicReader(w.ns.kafka, w.ns.deadletter)
    wait_until("three dead letters", lambda: len(dl.poll()) >= 3)
    dead = dl.read_to_end()
    dl.close()
    reasons = {dict(r.headers)[HEADER_ERROR_MESSAGE].decode() for r in dead}
    assert all(dict(r.headers)[HEADER_SOURCE_TOPIC].decode() == police_topic for r in dead)
    assert any(m.startswith("hub_public_key: differs from the hub's registered key")
               for m in reasons), reasons
    assert any(m.startswith("agency_id: differs") for m in reasons), reasons
    assert len(reasons) == 3, reasons

    # The audit trail: received, then each decision, per agency's office.
    audit_reader = TopicReader(w.ns.kafka, w.ns.audit)
    wait_until("six audit entries", lambda: len(audit_reader.decoded(AuditEntry)) >= 6)
    raw_audit = [r.value for r in audit_reader.read_to_end()]
    entries = audit_reader.decoded(AuditEntry)
    audit_reader.close()
    trail = {(e.service, e.action, e.subject_id, e.actor) for e in entries}
    assert trail == {
        ("reid-police-wy", AuditAction.REIDENTIFICATION_RECEIVED, approve.request_id, HUB),
        ("reid-police-wy", AuditAction.REIDENTIFICATION_RECEIVED, unknown.request_id, HUB),
        ("reid-school-leeds", AuditAction.REIDENTIFICATION_RECEIVED, decline.request_id, HUB),
        ("reid-police-wy", AuditAction.REIDENTIFICATION_APPROVED, approve.request_id,
         "off-police"),
        ("reid-school-leeds", AuditAction.REIDENTIFICATION_DECLINED, decline.request_id,
         "off-school"),
        ("reid-police-wy", AuditAction.REIDENTIFICATION_DECLINED, unknown.request_id,
         "reid-service"),
    }

    # No identity anywhere but inside the sealed answer: not in the log, the audit trail,
    # the dead letters, or the answers' bytes.
    records = caplog.get_records("setup") + caplog.get_records("call")
    log_text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in records)
    # The capture works: it holds the service's start and its dead-letter warnings.
    assert "re-identification desk" in log_text and "dead-lettered" in log_text
    haystacks = [log_text.encode(), *raw_audit, *(r.value or b"" for r in dead), *raw_answers]
    for needle in IDENTITY_STRINGS:
        for form in {needle, needle.upper(), needle.replace(" ", "")}:
            assert not any(form.encode() in h for h in haystacks), "an identity leaked"


def police_audit_write(ns: Namespace) -> list[ACL]:
    return [to_acl(g) for g in grants(ns.registry, ns.prefix)
            if g.principal == POLICE and g.name == ns.audit and g.operation is Operation.WRITE]


def test_a_decision_that_cannot_be_audited_is_not_sent(world: World) -> None:
    """The audit log records every decision before the hub can receive it: with the police
    unable to write the audit log, the officer's approval is refused, nothing reaches the hub,
    and the request stays pending; once the log is writable again, the same approval goes out
    with its entry ahead of it."""
    w = world
    req = ask(POLICE, (w.handles["alice"],), hub_key(w, HUB))
    send_as_hub(w, [(reid_requests(w.ns.prefix, POLICE), req.request_id.encode(), encode(req))])
    police = officer(w, "off-police")
    wait_until("the request", lambda: pending(police) == {req.request_id})

    admin = make_admin(w.ns.kafka, "test-revoke-audit")
    try:
        (acl,) = police_audit_write(w.ns)
        admin.delete_acls([acl])
        wait_until("the revocation", lambda: acl.principal not in {
            str(a.principal) for a in cluster_grants(admin)
            if a.resource_pattern.resource_name == w.ns.audit and a.operation == acl.operation})
    finally:
        admin.close()
    refused = police.post(f"/api/requests/{req.request_id}/approve")
    assert refused.status_code == 503, refused.text
    assert pending(police) == {req.request_id}
    answers = TopicReader(w.ns.connection(HUB), reid_responses(w.ns.prefix, HUB))
    assert answers.read_to_end() == []  # the answer never left without its audit entry

    apply(w.ns.kafka, w.ns.registry, w.ns.prefix)  # the audit log writable again
    answered = police.post(f"/api/requests/{req.request_id}/approve")
    assert answered.status_code == 200, answered.text
    wait_until("the answer", lambda: len(answers.decoded(ReidResponse)) == 1)
    answers.close()
    audit = TopicReader(w.ns.kafka, w.ns.audit)
    decided = [e for e in (decode(r.value, AuditEntry) for r in audit.read_to_end())
               if e.action is AuditAction.REIDENTIFICATION_APPROVED]
    audit.close()
    assert [e.subject_id for e in decided] == [req.request_id]


def test_a_third_agency_reads_neither_requests_nor_answers(world: World) -> None:
    w = world
    intruder = w.ns.connection(HEALTH)
    for topic in (reid_requests(w.ns.prefix, POLICE), reid_responses(w.ns.prefix, HUB)):
        assert_read_refused(intruder, topic)
    # And its officer, signed in to a desk that does not serve it, sees nothing.
    client = httpx.Client(base_url=w.base)
    client.post("/login", data={"ref": "off-health", "password": "pw"})
    assert client.get("/api/requests").status_code == 401


def test_the_command_serves_as_its_own_process(secure_namespace: Callable[..., Namespace],
                                               tmp_path: Path) -> None:
    """`safehub reid serve` as an operator starts it: flags and environment only; it answers,
    and stops cleanly on SIGTERM; its output holds no identity."""
    ns = secure_namespace(agencies={SCHOOL: "EDUCATION"}, hubs=[HUB, OTHER_HUB])
    a = prepare(ns, tmp_path)
    port = free_port()
    env = {**os.environ, **agency_env(ns), "SAFEHUB_REID_USERS": str(a.users),
           "SAFEHUB_REID_HUB_KEYS": str(a.hub_keys), "SAFEHUB_REGISTRY": str(a.registry),
           "SAFEHUB_REID_DATABASE_URL": f"sqlite:///{tmp_path / 'reid.db'}"}
    out = (tmp_path / "service.log").open("w+b")
    proc = subprocess.Popen(
        [*SAFEHUB, "-v", "reid", "serve", "--agency", SCHOOL, "--listen", f"127.0.0.1:{port}",
         "--vault-dir", str(a.vaults), "--export", f"{SCHOOL}={EXAMPLES_DIR / 'education.csv'}",
         "--plain-http-behind-proxy"],
        env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until("the officers' page", lambda: proc.poll() is None and page_up(base))
        w = World(ns, tmp_path, a.handles, base)
        req = ask(SCHOOL, (a.handles["chloe"],), hub_key(w, HUB))
        send_as_hub(w, [(reid_requests(ns.prefix, SCHOOL), req.request_id.encode(),
                         encode(req))])
        school = officer(w, "off-school")
        wait_until("the request", lambda: pending(school) == {req.request_id})
        assert "O&#39;Brien-Walsh" in school.get(f"/requests/{req.request_id}").text
        assert school.post(f"/api/requests/{req.request_id}/approve").status_code == 200
        reader = TopicReader(ns.connection(HUB), reid_responses(ns.prefix, HUB))
        wait_until("the answer", lambda: len(reader.decoded(ReidResponse)) == 1)
        (answer,) = reader.decoded(ReidResponse)
        reader.close()
        assert answer.sealed_identity is not None
        opened = open_sealed(answer.sealed_identity,
                             load_private_key(tmp_path / "hub-private", HUB),
                             binding(req.request_id, req.alert_id, HUB, SCHOOL))
        assert (opened.first_name, opened.nhs_number, opened.record_refs) == (
            "Chloë", "996 030 8243", ("C-2024-0441", "C-2024-0447"))
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0
    out.seek(0)
    text = out.read()
    assert b"re-identification desk for school-leeds" in text
    for needle in SCHOOL_IDENTITY:
        assert needle.encode() not in text and needle.upper().encode() not in text
