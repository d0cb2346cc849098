"""`safehub router` and `safehub inbox` as the demo runs them: separate processes, settings from
SAFEHUB_* variables, correlated alert in -> row in the lead agency's inbox; SIGTERM exits 0.
The router runs as `router`; the one inbox process serves two hubs, each as itself, with no
principal named (each hub's password file is in SAFEHUB_KAFKA_SECRETS)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from safehub.bus import make_producer, send_all
from safehub.consumers.inbox.database import make_engine
from safehub.consumers.inbox.store import InboxStore, QueueFilter
from safehub.errors import StoreError
from safehub.schemas.codec import encode
from safehub.schemas.records import CorrelatedAlert, Evidence, ReidentificationRef
from safehub.schemas.vocabulary import Sector, Sign, Tier
from safehub.services.router.table import load_routing_table
from safehub.topics import alerts
from tests.conftest import Namespace
from tests.fixtures.cli import SAFEHUB

pytestmark = pytest.mark.integration


def alert(la: str) -> CorrelatedAlert:
    now = int(time.time() * 1000)
    return CorrelatedAlert(
        alert_id=uuid.uuid4().hex, rules_version="a" * 64, cluster_id=uuid.uuid4().hex,
        linkage_block=1, tier=Tier.ESCALATING, rule="three-signs", score=3.0, raised_at=now,
        age_years=15, local_authority=la, placing_authority=None, agencies=("police-wy",),
        evidence=(Evidence("e" * 32, "police-wy", Sector.POLICE, Sign.OFFENDING, now, 1.0),),
        reidentification=(ReidentificationRef("police-wy", "f" * 32),), identity_conflict=False)




def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_")}


@pytest.fixture
def namespace(secure_namespace: Callable[..., Namespace]) -> Namespace:
    """Every receiver of the project's routing table is a hub with its topics."""
    return secure_namespace(agencies={"police-wy": "POLICE"},
                            hubs=sorted(load_routing_table().receivers()))


def test_router_and_inbox_processes_deliver_to_the_lead_agency(
    namespace: Namespace, tmp_path: Path,
) -> None:
    ns = namespace
    inbox_url = f"sqlite:///{tmp_path / 'inbox.db'}"
    router_env = {**clean_env(), **ns.env("router"),
                  "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'router.db'}"}
    admin = ns.kafka.env()
    inbox_env = {**clean_env(), "SAFEHUB_TOPIC_PREFIX": ns.prefix,
                 **{k: admin[k] for k in ("SAFEHUB_KAFKA_BOOTSTRAP", "SAFEHUB_KAFKA_SECRETS",
                                          "SAFEHUB_KAFKA_CA_FILE")},
                 "SAFEHUB_INBOX_AGENCIES": "csc-leeds,hub-duty-team",
                 "SAFEHUB_INBOX_DATABASE_URL": inbox_url}
    router = subprocess.Popen([*SAFEHUB, "router"], env=router_env, stderr=subprocess.PIPE)
    inbox = subprocess.Popen([*SAFEHUB, "inbox"], env=inbox_env, stderr=subprocess.PIPE)
    try:
        leeds, nowhere = alert("E08000035"), alert("E06000999")
        producer = make_producer(ns.connection("correlator"), "test-correlated")
        send_all(producer, [(ns.correlated, a.cluster_id.encode(), encode(a), None)
                            for a in (leeds, nowhere)])
        producer.close()
        store = InboxStore(make_engine(inbox_url))
        end = time.monotonic() + 60
        while True:
            try:
                if store.count() >= 2:
                    break
            except StoreError:
                assert time.monotonic() < end, "the inbox never created its tables"
            assert router.poll() is None and inbox.poll() is None, "a service died"
            assert time.monotonic() < end, "alerts did not reach the inbox"
            time.sleep(0.5)
        assert [r.alert_id for r in store.queue("csc-leeds", QueueFilter(), 0)] == [leeds.alert_id]
        fallback = store.queue("hub-duty-team", QueueFilter(), 0)
        assert [(r.alert_id, r.reason) for r in fallback] == [(nowhere.alert_id, "FALLBACK")]
    finally:
        for proc in (router, inbox):
            proc.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in (router, inbox)]
    assert codes == [0, 0], [p.stderr.read().decode()[-2000:] for p in (router, inbox)
                             if p.stderr]



def test_the_router_process_stops_naming_a_receiver_without_topics(
    namespace: Namespace, tmp_path: Path,
) -> None:
    table = tmp_path / "routing.toml"
    table.write_text('[fallback]\nagency = "hub-duty-team"\nescalation = "csc-unknown"\n')
    env = {**clean_env(), **namespace.env("router"), "SAFEHUB_ROUTING_TABLE": str(table),
           "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'router.db'}"}
    done = subprocess.run([*SAFEHUB, "router"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert alerts(namespace.prefix, "csc-unknown") in err and "safehub topics create" in err, err
