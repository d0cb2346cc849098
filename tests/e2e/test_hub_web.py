"""The hub's web page in a real headless Chromium (Debian's chromium + chromedriver, Selenium):
sign in, see the queue, open an alert, read its timeline, record a decision; and a user of one
agency cannot reach another agency's alert by any URL.

The web app runs as a real `safehub web` process over an inbox filled by the real inbox
consumers from the real secure broker, as the demo runs it: one process for both hubs of its
users, each hub's writes made as that hub (no principal named; each hub's password file in
SAFEHUB_KAFKA_SECRETS). A decision is checked on the user's hub's `alert-acks.<hub>` and `audit`.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from safehub.bus import make_consumer, make_producer, send_all
from safehub.connection import KafkaConnection
from safehub.consumers.inbox.command import hub_inbox
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.errors import BrokerError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import (
    AlertAck,
    AuditEntry,
    CorrelatedAlert,
    Evidence,
    ReidentificationRef,
    RoutedAlert,
)
from safehub.schemas.vocabulary import AckAction, AuditAction, Decision, Sector, Sign, Tier
from safehub.schemas.vocabulary import SignificantIncident as SI
from safehub.services.router import core
from safehub.services.router.core import ClusterState
from safehub.services.router.table import load_routing_table
from safehub.services.web.users import hash_password
from safehub.topics import acks, alerts
from tests.conftest import Namespace
from tests.fixtures.cli import SAFEHUB
from tests.fixtures.web import PASSWORD, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
NOW = int(time.time() * 1000)


def routed(n: int, la: str, tier: Tier = Tier.ESCALATING) -> RoutedAlert:
    evidence = (
        Evidence("a" * 31 + str(n), "police-west-yorkshire", Sector.POLICE,
                 Sign.MISSING_FROM_HOME_OR_CARE, NOW - 5 * 86_400_000, 1.0),
        Evidence("b" * 31 + str(n), "school-leeds-high", Sector.EDUCATION,
                 Sign.ABSENT_FROM_SCHOOL, NOW - 4 * 86_400_000, 1.0),
        Evidence("c" * 31 + str(n), "health-leeds-sexual-health", Sector.HEALTH,
                 SI.FOUND_IN_CAR_WITH_UNKNOWN_ADULTS, NOW - 3 * 86_400_000, 3.0),
    )
    alert = CorrelatedAlert(
        alert_id=uuid.uuid4().hex, rules_version="d" * 64, cluster_id=uuid.uuid4().hex,
        linkage_block=n, tier=tier, rule="significant-incident", score=5.0,
        raised_at=NOW - 3 * 86_400_000, age_years=13 + n, local_authority=la,
        placing_authority=None, agencies=tuple(sorted({e.agency_id for e in evidence})),
        evidence=evidence,
        reidentification=(ReidentificationRef("police-west-yorkshire", "e" * 32),),
        identity_conflict=False)
    _, (note,) = core.receive(load_routing_table(), ClusterState(alert.cluster_id), alert, NOW)
    return note.routed


HUBS = ("csc-bradford", "csc-leeds")


@pytest.fixture
def hub(secure_namespace: Callable[..., Namespace],
        tmp_path: Path) -> Iterator[dict[str, object]]:
    ns = secure_namespace(hubs=HUBS)
    prefix = ns.prefix
    leeds = [routed(1, "E08000035", Tier.HIGH), routed(2, "E08000035")]
    bradford = routed(3, "E08000032")
    producer = make_producer(ns.connection("router"), "e2e-router")
    records = [(alerts(prefix, r.receiver_agency), r.alert.alert_id.encode(), encode(r), None)
               for r in [*leeds, bradford]]
    end = time.monotonic() + 15
    while True:
        # ACLs just created may take a moment to reach the broker's authorizer; the records
        # are keyed by alert id, and the inbox drops a notification it has.
        try:
            send_all(producer, records)
            break
        except BrokerError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)
    producer.close()
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    store = InboxStore(make_engine(url))
    migrate(store.engine)
    inboxes = [hub_inbox(ns.connection(h), h, store, prefix, lambda: NOW) for h in HUBS]
    stop = threading.Event()
    end = time.monotonic() + 30
    while store.count() < 3:
        assert time.monotonic() < end, "inbox did not store the alerts"
        for inbox in inboxes:
            inbox.step(stop, timeout_ms=300)
    for inbox in inboxes:
        inbox.close()
    users = tmp_path / "users.toml"
    users.write_text(
        f'[[user]]\nref = "sw-leeds-1"\nagency = "csc-leeds"\n'
        f'password = "{hash_password(PASSWORD)}"\n'
        f'[[user]]\nref = "sw-bradford-1"\nagency = "csc-bradford"\n'
        f'password = "{hash_password(PASSWORD)}"\n')
    port = free_port()
    admin = ns.kafka.env()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_")},
           **{k: admin[k] for k in ("SAFEHUB_KAFKA_BOOTSTRAP", "SAFEHUB_KAFKA_SECRETS",
                                    "SAFEHUB_KAFKA_CA_FILE")},
           "SAFEHUB_TOPIC_PREFIX": prefix, "SAFEHUB_WEB_USERS": str(users),
           "SAFEHUB_WEB_PORT": str(port), "SAFEHUB_INBOX_DATABASE_URL": url,
           # HTTPS by default: `safehub web` makes its certificate from a local CA here.
           "SAFEHUB_WEB_TLS_DIR": str(tmp_path / "web-tls")}
    proc = subprocess.Popen([*SAFEHUB, "web"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}"
    ca = tmp_path / "web-tls" / "ca.pem"
    end = time.monotonic() + 30
    while True:
        try:
            # Verified against the CA it made: a valid certificate for 127.0.0.1.
            trust = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else None
            if trust is not None:
                httpx.get(base + "/login", timeout=1, verify=trust)
                break
            raise httpx.ConnectError("no certificate yet")
        except httpx.TransportError:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < end, "safehub web did not start"
            time.sleep(0.3)
    yield {"base": base, "leeds": leeds, "bradford": bradford, "prefix": prefix, "ns": ns,
           "trust": trust}
    proc.terminate()
    assert proc.wait(15) == 0, "safehub web did not exit cleanly on SIGTERM"


def sign_in(driver, base: str, ref: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.get(base + "/alerts")
    assert "/login" in driver.current_url  # not signed in: sent to the sign-in page
    driver.find_element(By.ID, "ref").send_keys(ref)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    assert wait_for(driver, "#who").text == ref


def read_topic(kafka: KafkaConnection, topic: str, want: Callable[[list[bytes]], bool]
               ) -> list[bytes]:
    consumer = make_consumer(kafka, None, [topic], client_id="e2e-reader")
    seen: list[bytes] = []
    end = time.monotonic() + 20
    while not want(seen) and time.monotonic() < end:
        for recs in consumer.poll(timeout_ms=500).values():
            seen += [r.value for r in recs]
    consumer.close()
    return seen


def test_sign_in_queue_timeline_decision(hub: dict, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, leeds = hub["base"], hub["leeds"]
    sign_in(browser, base, "sw-leeds-1")
    rows = browser.find_elements(By.CSS_SELECTOR, "#queue tr.alert-row")
    assert {r.get_attribute("data-id") for r in rows} == {x.notification_id for x in leeds}
    # Filter: high tier only.
    Select(browser.find_element(By.ID, "f-tier")).select_by_value("HIGH")
    browser.find_element(By.ID, "apply").click()
    wait_for(browser, "#f-tier option[value=HIGH][selected]")
    rows = browser.find_elements(By.CSS_SELECTOR, "#queue tr.alert-row")
    assert [r.get_attribute("data-id") for r in rows] == [leeds[0].notification_id]
    rows[0].find_element(By.CSS_SELECTOR, "a.open").click()
    timeline = wait_for(browser, "#timeline")
    items = timeline.find_elements(By.CSS_SELECTOR, "li.evidence")
    assert [i.find_element(By.CLASS_NAME, "agency").text for i in items] == [
        "police-west-yorkshire", "school-leeds-high", "health-leeds-sexual-health"]
    assert [i.find_element(By.CLASS_NAME, "indicator").text for i in items] == [
        "Missing from home or care", "Absent from school", "Found in car with unknown adults"]
    assert browser.find_element(By.ID, "rule").text == "significant-incident"

    Select(browser.find_element(By.ID, "decision-choice")).select_by_value("STRATEGY_MEETING")
    browser.find_element(By.ID, "record-decision").click()
    assert wait_for(browser, "#decision").text == "Strategy meeting"
    assert "sw-leeds-1 decided: Strategy meeting" in browser.find_element(By.ID, "timeline").text

    prefix, ns = hub["prefix"], hub["ns"]
    # As the router reads it: on Leeds's own ack topic, which only Leeds's principal can write.
    got = [decode(v, AlertAck) for v in read_topic(ns.connection("router"),
                                                   acks(prefix, "csc-leeds"),
                                                   lambda s: len(s) >= 1)]
    # A set: acks are published at least once (a timed-out send is published again).
    assert {(a.alert_id, a.agency_id, a.user_ref, a.action, a.decision) for a in got} == {
        (leeds[0].alert.alert_id, "csc-leeds", "sw-leeds-1", AckAction.DECIDED,
         Decision.STRATEGY_MEETING)}
    entries = [decode(v, AuditEntry) for v in read_topic(
        ns.connection("auditor"), prefix + "audit",
        lambda s: AuditAction.ALERT_DECIDED in {decode(v, AuditEntry).action for v in s})]
    mine = {(e.action, e.subject_id, e.actor) for e in entries}
    assert (AuditAction.ALERT_VIEWED, leeds[0].alert.alert_id, "sw-leeds-1") in mine
    assert (AuditAction.ALERT_DECIDED, leeds[0].alert.alert_id, "sw-leeds-1") in mine


def test_another_agencys_alert_is_not_found_by_any_url(hub: dict, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    base, other = hub["base"], hub["bradford"].notification_id
    sign_in(browser, base, "sw-leeds-1")
    browser.get(f"{base}/alerts/{other}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    assert other not in browser.page_source
    browser.get(f"{base}/api/alerts/{other}")
    assert "no such alert" in browser.page_source
    browser.get(f"{base}/api/alerts")
    assert other not in browser.page_source
    # The same through the API with the browser's session, for every method and path.
    cookie = browser.get_cookie("safehub_session")["value"]
    with httpx.Client(base_url=base, verify=hub["trust"],
                      cookies={"safehub_session": cookie}) as client:
        assert client.get(f"/alerts/{other}").status_code == 404
        assert client.get(f"/api/alerts/{other}").status_code == 404
        assert client.post(f"/api/alerts/{other}/ack").status_code == 404
        assert client.post(f"/api/alerts/{other}/decision",
                           json={"decision": "NO_FURTHER_ACTION"}).status_code == 404
        page = client.get("/alerts").text
        token = page.split('name="csrf" value="')[1].split('"')[0] if 'name="csrf"' in page \
            else client.get(f"/alerts/{hub['leeds'][0].notification_id}").text.split(
                'name="csrf" value="')[1].split('"')[0]
        assert client.post(f"/alerts/{other}/ack", data={"csrf": token}).status_code == 404
        assert client.post(f"/alerts/{other}/decision",
                           data={"csrf": token, "decision": "NO_FURTHER_ACTION",
                                 "lawful_basis": "CONSENT",
                                 "rationale": "THRESHOLD_NOT_MET"}).status_code == 404
        assert other not in client.get("/api/alerts", params={"status": "NEW"}).text
    # Signed out, nothing at all; a wrong password signs nobody in.
    with httpx.Client(base_url=base, verify=hub["trust"]) as anon:
        refused = anon.post("/login", data={"ref": "sw-bradford-1", "password": "guess"})
        assert "Unknown user or wrong password." in refused.text
        assert anon.get("/api/alerts").status_code == 401
        assert anon.get(f"/api/alerts/{other}").status_code == 401
        assert anon.get(f"/alerts/{other}", follow_redirects=False).status_code == 303
    # Bradford's own user does see it.
    browser.delete_all_cookies()
    sign_in(browser, base, "sw-bradford-1")
    ids = [r.get_attribute("data-id")
           for r in browser.find_elements(By.CSS_SELECTOR, "#queue tr.alert-row")]
    assert ids == [other]
    # Bradford's acknowledgement goes to Bradford's ack topic, with Bradford's producer.
    cookie = browser.get_cookie("safehub_session")["value"]
    with httpx.Client(base_url=base, verify=hub["trust"],
                      cookies={"safehub_session": cookie}) as client:
        answer = client.post(f"/api/alerts/{other}/ack")
    assert answer.status_code == 200 and answer.json()["published"] is True
    ns = hub["ns"]
    got = [decode(v, AlertAck) for v in read_topic(ns.connection("router"),
                                                   acks(hub["prefix"], "csc-bradford"),
                                                   lambda s: len(s) >= 1)]
    assert {(a.alert_id, a.agency_id, a.user_ref) for a in got} == {
        (hub["bradford"].alert.alert_id, "csc-bradford", "sw-bradford-1")}


def test_each_users_acks_go_to_their_own_hubs_topic(hub: dict) -> None:
    """Without a browser: the API, one web process serving two hubs. Each user's decision is
    written with their own hub's producer to their own hub's ack topic, audited likewise."""
    base, prefix, ns = hub["base"], hub["prefix"], hub["ns"]
    mine = {"sw-leeds-1": hub["leeds"][1], "sw-bradford-1": hub["bradford"]}
    for ref, note in mine.items():
        with httpx.Client(base_url=base, verify=hub["trust"]) as client:
            signed = client.post("/login", data={"ref": ref, "password": PASSWORD})
            assert signed.status_code in (200, 303)
            answer = client.post(f"/api/alerts/{note.notification_id}/decision",
                                 json={"decision": "NO_FURTHER_ACTION"})
            assert answer.status_code == 200 and answer.json()["published"] is True
    for ref, note in mine.items():
        got = [decode(v, AlertAck) for v in read_topic(
            ns.connection("router"), acks(prefix, note.receiver_agency), lambda s: len(s) >= 1)]
        assert {(a.alert_id, a.agency_id, a.user_ref, a.decision) for a in got} == {
            (note.alert.alert_id, note.receiver_agency, ref, Decision.NO_FURTHER_ACTION)}
    entries = [decode(v, AuditEntry) for v in read_topic(
        ns.connection("auditor"), prefix + "audit",
        lambda s: sum(decode(v, AuditEntry).action is AuditAction.ALERT_DECIDED
                      for v in s) >= 2)]
    assert {(e.subject_id, e.actor) for e in entries
            if e.action is AuditAction.ALERT_DECIDED} == {
        (note.alert.alert_id, ref) for ref, note in mine.items()}
