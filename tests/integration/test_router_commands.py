"""`safehub router` and `safehub inbox` as the demo runs them: separate processes, settings from
SAFEHUB_* variables, correlated alert in -> row in the lead agency's inbox; SIGTERM exits 0."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
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

pytestmark = pytest.mark.integration


def alert(la: str) -> CorrelatedAlert:
    now = int(time.time() * 1000)
    return CorrelatedAlert(
        alert_id=uuid.uuid4().hex, rules_version="a" * 64, cluster_id=uuid.uuid4().hex,
        linkage_block=1, tier=Tier.ESCALATING, rule="three-signs", score=3.0, raised_at=now,
        age_years=15, local_authority=la, placing_authority=None, agencies=("police-wy",),
        evidence=(Evidence("e" * 32, "police-wy", Sector.POLICE, Sign.OFFENDING, now, 1.0),),
        reidentification=(ReidentificationRef("police-wy", "f" * 32),), identity_conflict=False)


def test_router_and_inbox_processes_deliver_to_the_lead_agency(
    kafka_bootstrap: str, topic_names: Callable[[str], str],
    create_topics_fn: Callable[..., list[str]], tmp_path: Path,
) -> None:
    prefix = topic_names("")
    create_topics_fn(*(prefix + t for t in ("correlated", "alert-acks", "audit", "deadletter")))
    inbox_url = f"sqlite:///{tmp_path / 'inbox.db'}"
    env = {**os.environ, "SAFEHUB_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SAFEHUB_TOPIC_PREFIX": prefix,
           "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'router.db'}",
           "SAFEHUB_ROUTER_GROUP": "router-" + uuid.uuid4().hex,
           "SAFEHUB_INBOX_GROUP": "inbox-" + uuid.uuid4().hex,
           "SAFEHUB_INBOX_AGENCIES": "csc-leeds,hub-duty-team",
           "SAFEHUB_INBOX_DATABASE_URL": inbox_url}
    cmd = (shutil.which("safehub") or f"{sys.executable} -m safehub.cli").split()
    router = subprocess.Popen([*cmd, "router"], env=env, stderr=subprocess.PIPE)
    # The router creates the alert topics of every receiver in the routing table.
    time.sleep(3)
    inbox = subprocess.Popen([*cmd, "inbox"], env=env, stderr=subprocess.PIPE)
    try:
        leeds, nowhere = alert("E08000035"), alert("E06000999")
        producer = make_producer(kafka_bootstrap, "test-correlated")
        send_all(producer, [(prefix + "correlated", a.cluster_id.encode(), encode(a), None)
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

