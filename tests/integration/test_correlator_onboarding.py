"""Onboarding an agency while the correlator runs: its new ingress topic is not read until the
workers restart (faust's pattern subscriptions do not work), so the worker must say so in its
log, and after a restart the events that waited on the topic are correlated."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from safehub.deploy.access import apply
from safehub.deploy.registry import Kind, Party
from safehub.deploy.topics import TopicSpec, create_topics
from safehub.schemas.records import WarningSignEvent
from safehub.schemas.vocabulary import Sector
from safehub.services.correlator.ingress import unread
from tests.fixtures.correlator import PARTITIONS, Site, child_sign, wait_until

pytestmark = pytest.mark.integration
WARNING = "are NOT read by this worker"


def _event(agency: str, sector: Sector, n: int) -> WarningSignEvent:
    return child_sign("onboarding child", agency, sector, n, 77)


def test_unread_names_only_topics_the_worker_does_not_read() -> None:
    assert unread(["p.ingress.a", "p.ingress.b", "p.ingress.c"], ["p.ingress.b"]) == \
        ["p.ingress.a", "p.ingress.c"]
    assert unread(["p.ingress.a"], ["p.ingress.a", "p.ingress.gone"]) == []


@pytest.mark.timeout(240)
# With a worker id the worker is a static group member, whose rejoining alone would not have
# the new topic assigned to it (transport.static_member_id).
@pytest.mark.parametrize("worker_id", ["", "w1"], ids=["anonymous", "worker-id"])
def test_a_topic_created_while_running_is_reported_then_read_after_a_restart(
        correlator_site: Callable[..., Site], worker_id: str) -> None:
    site = correlator_site({"police-x": Sector.POLICE})
    ns, prefix = site.ns, site.prefix
    correlator = site.correlator(SAFEHUB_CORRELATOR_TOPIC_CHECK_S="1",
                                 SAFEHUB_CORRELATOR_WORKER_ID=worker_id)
    correlator.start()
    accepted = site.out.accepted
    police = _event("police-x", Sector.POLICE, 0)
    site.send([police])
    wait_until("the police event", lambda: police.event_id in accepted(), 90, correlator)
    assert WARNING not in correlator.log.read_text()

    # A school is onboarded while the worker runs, as an operator does it (registry entry,
    # `safehub access apply`, `safehub topics create`), and sends at once.
    onboarded = ns.registry.with_parties([Party("school-z", Kind.AGENCY, Sector.EDUCATION)])
    apply(ns.kafka, onboarded, prefix)
    create_topics(ns.kafka, [TopicSpec(ns.ingress("school-z"), PARTITIONS, 1, {})])
    school = _event("school-z", Sector.EDUCATION, 1)
    site.send([school])
    wait_until("the warning", lambda: f"{ns.ingress('school-z')} {WARNING}"
               in correlator.log.read_text(), 60, correlator)
    assert school.event_id not in accepted()

    assert correlator.stop() == 0
    warnings_before = correlator.log.read_text().count(WARNING)
    correlator.start()
    wait_until("the school's event, after the restart",
               lambda: school.event_id in accepted(), 90, correlator)
    # The restarted worker reads every topic: no more warnings over a few of its checks.
    time.sleep(3)
    assert correlator.log.read_text().count(WARNING) == warnings_before
    assert correlator.stop() == 0
