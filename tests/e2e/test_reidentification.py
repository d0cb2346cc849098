"""Re-identification end to end, in a real headless Chromium on the real secure broker, every
party as its own principal and its own process: the hub's `safehub web` and `safehub inbox`,
and one `safehub reid serve` for two agencies with their vaults and their own export files.

A hub user asks two contributing agencies who the child behind an alert is; the police officer
approves on the agencies' page, the school's officer declines; the hub user sees the decline
with its reason and, after stating why, the identity as the police's own records hold it; the
audit log holds every step in order; and the identity never appears in any topic in the clear.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from safehub.bus import make_producer, send_all
from safehub.deploy.acl import all_topics
from safehub.errors import BrokerError
from safehub.producers.exports import example_mapping, load_mapping, read_export
from safehub.producers.records import AgencyRecord
from safehub.producers.vault import Assignment, Vault
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, CorrelatedAlert, Evidence, ReidentificationRef
from safehub.schemas.vocabulary import AuditAction, Sector, Sign, Tier
from safehub.services.reid.sealing import ensure_hub_key
from safehub.services.router import core
from safehub.services.router.core import ClusterState
from safehub.services.router.table import load_routing_table
from safehub.services.web.users import hash_password
from safehub.topics import alerts
from tests.conftest import Namespace
from tests.fixtures.cli import SAFEHUB
from tests.fixtures.topics import TopicReader
from tests.fixtures.web import PASSWORD, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
HUB = "csc-leeds"
POLICE, SCHOOL = "police-wy", "school-leeds"
NOW = int(time.time() * 1000)
EXAMPLES = Path(__file__).resolve().parents[2] / "producers" / "examples"


def first_record(file: str, sector: Sector) -> AgencyRecord:
    for _, record in read_export(EXAMPLES / file, load_mapping(example_mapping(sector))):
        assert isinstance(record, AgencyRecord.__args__), record  # type: ignore[attr-defined]
        return record  # type: ignore[return-value]
    raise AssertionError(f"{file} is empty")


def handle_for(vault_dir: Path, agency: str, record: AgencyRecord) -> str:
    vault = Vault.open(f"sqlite:///{vault_dir / (agency + '.sqlite')}")
    try:
        (handle,) = vault.assign(agency, [Assignment(f"ref:{record.person_ref}",
                                                     record.record_ref, uuid.uuid4().hex)])
        return handle
    finally:
        vault.close()


def registry_toml(ns: Namespace) -> str:
    lines = []
    for p in ns.registry.parties:
        lines += ["[[party]]", f'id = "{p.id}"', f'kind = "{p.kind.value}"']
        if p.sector is not None:
            lines.append(f'sector = "{p.sector.value}"')
        lines.append("")
    return "\n".join(lines)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SAFEHUB, *args], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, ca: Path) -> None:
    """Until the page answers over HTTPS (the default), its certificate verified against the
    local CA the process made in its TLS folder."""
    end = time.monotonic() + 40
    while True:
        try:
            if not ca.is_file():
                raise httpx.ConnectError("no certificate yet")
            httpx.get(url, timeout=1, verify=ssl.create_default_context(cafile=str(ca)))
            return
        except httpx.TransportError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < end, f"{url} did not start"
            time.sleep(0.3)


@pytest.fixture
def world(secure_namespace: Callable[..., Namespace], tmp_path: Path) -> Iterator[dict]:
    ns = secure_namespace(agencies={POLICE: "POLICE", SCHOOL: "EDUCATION"},
                          hubs=[HUB, "csc-bradford"])
    police, school = first_record("police.csv", Sector.POLICE), \
        first_record("education.csv", Sector.EDUCATION)
    vaults = tmp_path / "vaults"
    vaults.mkdir()
    handles = {POLICE: handle_for(vaults, POLICE, police), SCHOOL: handle_for(vaults, SCHOOL,
                                                                              school)}
    evidence = (
        Evidence("a" * 32, POLICE, Sector.POLICE, Sign.ASSOCIATING_WITH_OLDER_ADULTS,
                 NOW - 5 * 86_400_000, 2.0),
        Evidence("b" * 32, SCHOOL, Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL,
                 NOW - 4 * 86_400_000, 1.0),
    )
    alert = CorrelatedAlert(
        alert_id=uuid.uuid4().hex, rules_version="d" * 64, cluster_id=uuid.uuid4().hex,
        linkage_block=7, tier=Tier.HIGH, rule="multi-agency", score=6.0,
        raised_at=NOW - 4 * 86_400_000, age_years=15, local_authority="E08000035",
        placing_authority=None, agencies=(POLICE, SCHOOL), evidence=evidence,
        reidentification=tuple(ReidentificationRef(a, h) for a, h in sorted(handles.items())),
        identity_conflict=False)
    _, (note,) = core.receive(load_routing_table(), ClusterState(alert.cluster_id), alert, NOW)
    routed = note.routed
    assert routed.receiver_agency == HUB
    producer = make_producer(ns.connection("router"), "e2e-router")
    end = time.monotonic() + 15
    while True:
        try:
            send_all(producer, [(alerts(ns.prefix, HUB), alert.alert_id.encode(),
                                 encode(routed), None)])
            break
        except BrokerError:
            assert time.monotonic() < end
            time.sleep(0.5)
    producer.close()

    private, public = tmp_path / "hub-private", tmp_path / "hub-public"
    for hub in (HUB, "csc-bradford"):
        ensure_hub_key(private, public, hub)
    hub_users, officers, registry = (tmp_path / "users.toml", tmp_path / "officers.toml",
                                     tmp_path / "registry.toml")
    hub_users.write_text(f'[[user]]\nref = "sw-leeds-1"\nagency = "{HUB}"\n'
                         f'password = "{hash_password(PASSWORD)}"\n')
    officers.write_text(
        f'[[user]]\nref = "dpo-police"\nagency = "{POLICE}"\n'
        f'password = "{hash_password(PASSWORD)}"\n'
        f'[[user]]\nref = "dpo-school"\nagency = "{SCHOOL}"\n'
        f'password = "{hash_password(PASSWORD)}"\n')
    registry.write_text(registry_toml(ns))
    admin = ns.kafka.env()
    base_env = {**{k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_")},
                **{k: admin[k] for k in ("SAFEHUB_KAFKA_BOOTSTRAP", "SAFEHUB_KAFKA_SECRETS",
                                         "SAFEHUB_KAFKA_CA_FILE")},
                "SAFEHUB_TOPIC_PREFIX": ns.prefix}
    inbox_url = f"sqlite:///{tmp_path / 'inbox.db'}"
    hub_env = {**base_env, "SAFEHUB_INBOX_DATABASE_URL": inbox_url,
               "SAFEHUB_REID_KEYS": str(private)}
    web_port, reid_port = free_port(), free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("inbox", "web", "reid")}
    procs = [
        start(["inbox", "--agency", HUB], hub_env, logs["inbox"]),
        start(["web"], {**hub_env, "SAFEHUB_WEB_USERS": str(hub_users),
                        "SAFEHUB_WEB_PORT": str(web_port),
                        "SAFEHUB_WEB_TLS_DIR": str(tmp_path / "web-tls")}, logs["web"]),
        start(["reid", "serve", "--agency", POLICE, "--agency", SCHOOL, "--users", str(officers),
               "--hub-keys", str(public), "--listen", f"127.0.0.1:{reid_port}",
               "--database", f"sqlite:///{tmp_path / 'reid.db'}", "--vault-dir", str(vaults),
               "--export", f"{POLICE}={EXAMPLES / 'police.csv'}",
               "--export", f"{SCHOOL}={EXAMPLES / 'education.csv'}",
               "--registry", str(registry)],
              {**base_env, "SAFEHUB_REID_TLS_DIR": str(tmp_path / "reid-tls")}, logs["reid"]),
    ]
    try:
        # Both pages HTTPS by default, each with a local certificate (Chromium is told to
        # accept it, tests/fixtures/browser.py).
        wait_http(f"https://127.0.0.1:{web_port}/login", procs[1], logs["web"],
                  tmp_path / "web-tls" / "ca.pem")
        wait_http(f"https://127.0.0.1:{reid_port}/login", procs[2], logs["reid"],
                  tmp_path / "reid-tls" / "ca.pem")
        yield {"ns": ns, "routed": routed, "police": police, "school": school,
               "hub": f"https://127.0.0.1:{web_port}",
               "agencies": f"https://127.0.0.1:{reid_port}",
               "logs": logs}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


def sign_in(driver, base: str, ref: str, landing: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base + "/login")
    driver.find_element(By.ID, "ref").send_keys(ref)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    assert wait_for(driver, "#who").text == ref
    driver.get(base + landing)


def test_a_hub_asks_two_agencies_one_approves_one_declines(world: dict, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    hub, agencies, routed = world["hub"], world["agencies"], world["routed"]
    nid = routed.notification_id
    page = f"/alerts/{nid}"
    sign_in(browser, hub, "sw-leeds-1", "/alerts")
    end = time.monotonic() + 30
    while nid not in browser.page_source:  # the inbox process stores the alert
        assert time.monotonic() < end, "the alert never reached the hub's inbox"
        time.sleep(0.5)
        browser.refresh()
    browser.get(hub + page)
    form = wait_for(browser, "#request-reidentification")
    assert "Only an agency that contributed" in browser.page_source  # the explanation
    for box in form.find_elements(By.NAME, "agency"):
        box.click()
    Select(browser.find_element(By.ID, "reid-basis")).select_by_value(
        "DPA_SCH8_PARA4_SAFEGUARDING")
    Select(browser.find_element(By.ID, "reid-purpose")).select_by_value("STRATEGY_MEETING")
    browser.find_element(By.ID, "send-reidentification").click()
    wait_for(browser, "#reid-requests")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.reid-request")
    assert {(r.get_attribute("data-agency"), r.get_attribute("data-status")) for r in rows} == {
        (POLICE, "REQUESTED"), (SCHOOL, "REQUESTED")}

    # Each agency's officer decides on the agencies' page, seeing only their own request.
    for officer, decide in (("dpo-police", "approve"), ("dpo-school", "decline")):
        sign_in(browser, agencies, officer, "/requests")
        end = time.monotonic() + 30
        while not browser.find_elements(By.CSS_SELECTOR, "#pending tr.request"):
            assert time.monotonic() < end, f"{officer} never saw the request"
            time.sleep(0.5)
            browser.refresh()
        pending = browser.find_elements(By.CSS_SELECTOR, "#pending tr.request")
        assert len(pending) == 1  # not the other agency's request
        pending[0].find_element(By.LINK_TEXT, "Open").click()
        assert wait_for(browser, "#hub").text == HUB
        assert browser.find_element(By.ID, "purpose").text == "Strategy meeting"
        if decide == "approve":
            # The officer sees the child as the police's own records hold them.
            assert world["police"].record_ref in browser.page_source
            browser.find_element(By.ID, "approve").click()
        else:
            Select(browser.find_element(By.ID, "reason")).select_by_value(
                "NOT_NECESSARY_OR_PROPORTIONATE")
            browser.find_element(By.ID, "decline").click()
        wait_for(browser, "#done")

    # Back at the hub: the answers arrive through the hub's inbox.
    sign_in(browser, hub, "sw-leeds-1", page)
    end = time.monotonic() + 40
    while True:
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.reid-request")
        status = {r.get_attribute("data-agency"): r.get_attribute("data-status") for r in rows}
        if status == {POLICE: "APPROVED", SCHOOL: "DECLINED"}:
            break
        assert time.monotonic() < end, f"answers not delivered: {status}"
        time.sleep(0.5)
        browser.refresh()
    school_row = next(r for r in rows if r.get_attribute("data-agency") == SCHOOL)
    assert school_row.find_element(By.CLASS_NAME, "decline-reason").text == \
        "Not necessary or proportionate"
    police_identity = world["police"].identity
    assert police_identity.surname not in browser.page_source  # sealed until opened
    police_row = next(r for r in rows if r.get_attribute("data-agency") == POLICE)
    opener = police_row.find_element(By.CSS_SELECTOR, "form.open-identity")
    Select(opener.find_element(By.NAME, "reason")).select_by_value("STRATEGY_MEETING")
    opener.find_element(By.TAG_NAME, "button").click()
    assert wait_for(browser, "#identity-surname").text == police_identity.surname
    assert browser.find_element(By.ID, "identity-first-name").text == police_identity.first_name
    assert world["police"].record_ref in browser.find_element(By.ID, "identity-records").text

    # The audit log, as the auditor reads it: every step, in order.
    ns = world["ns"]
    audit = TopicReader(ns.connection("auditor"), ns.audit)
    steps = [AuditAction.REIDENTIFICATION_REQUESTED, AuditAction.REIDENTIFICATION_RECEIVED,
             AuditAction.REIDENTIFICATION_APPROVED, AuditAction.REIDENTIFICATION_DECLINED,
             AuditAction.REIDENTIFICATION_DELIVERED, AuditAction.REIDENTIFICATION_VIEWED]
    end = time.monotonic() + 30
    while not set(steps) <= {decode(r.value, AuditEntry).action for r in audit.poll()}:
        assert time.monotonic() < end, "audit steps missing"
    entries = [decode(r.value, AuditEntry) for r in audit.read_to_end()]
    reid = [e for e in entries if e.action in steps]
    first = {s: min(i for i, e in enumerate(reid) if e.action is s) for s in steps}
    last = {s: max(i for i, e in enumerate(reid) if e.action is s) for s in steps}
    assert [e.action for e in reid].count(AuditAction.REIDENTIFICATION_REQUESTED) == 2
    assert last[AuditAction.REIDENTIFICATION_REQUESTED] < first[
        AuditAction.REIDENTIFICATION_RECEIVED]
    assert last[AuditAction.REIDENTIFICATION_RECEIVED] < min(
        first[AuditAction.REIDENTIFICATION_APPROVED], first[AuditAction.REIDENTIFICATION_DECLINED])
    assert max(last[AuditAction.REIDENTIFICATION_APPROVED],
               last[AuditAction.REIDENTIFICATION_DECLINED]) < last[
        AuditAction.REIDENTIFICATION_DELIVERED] < first[AuditAction.REIDENTIFICATION_VIEWED]

    # No part of either child's identity crossed any topic in the clear, nor any log.
    everything = TopicReader(ns.kafka, *all_topics(ns.registry, ns.prefix, internal=False))
    raw = b"".join((r.value or b"") + (r.key or b"") for r in everything.read_to_end())
    logs = b"".join(path.read_bytes() for path in world["logs"].values())
    for record in (world["police"], world["school"]):
        ident = record.identity
        for text in (ident.first_name, ident.surname, ident.surname.upper(),
                     ident.nhs_number or "", ident.postcode or ""):
            if text:
                assert text.encode() not in raw, "an identifier reached a topic"
                assert text.encode() not in logs, "an identifier reached a log"
