"""`safehub audit replay` against the real broker.

The correlator's side is played here exactly as the interface fixes it (journal EVENT_ACCEPTED
with the digest of the raw bytes, feed `step`, publish the alerts to `correlated`, journal
ALERT_EMITTED), so that replay is tested against records shaped like the live ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from safehub.bus import make_producer, send_all
from safehub.cli import main
from safehub.connection import KafkaConnection
from safehub.schemas.codec import encode
from safehub.schemas.vocabulary import AuditAction, Sign
from safehub.services.audit.journal import AuditJournal
from safehub.services.correlation.core import BlockState, initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules, parse_rules
from tests.conftest import Namespace
from tests.fixtures.audit import AGENCIES, DAY, T0, auditor_env, hex_id, replay_events

pytestmark = pytest.mark.integration

HUB = "hub-test"


@pytest.fixture
def pipeline(secure_namespace: Callable[..., Namespace],
             monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    ns = secure_namespace(agencies={a: str(s) for a, s in AGENCIES.items()}, hubs=[HUB],
                          partitions=3)
    prefix = ns.prefix
    auditor_env(ns, monkeypatch)  # replay runs as the auditor
    # Each agency publishes as itself; the correlator's side as the correlator.
    for agency in AGENCIES:
        producer = make_producer(ns.connection(agency), f"test-replay-{agency}")
        send_all(producer, [(f"{prefix}ingress.{a}", e.subject.linkage_block.to_bytes(4, "big"),
                             encode(e), None) for a, e in replay_events(40) if a == agency])
        producer.close()
    events = replay_events(40)
    producer = make_producer(ns.connection("correlator"), "test-replay")
    # The processor, as the interface fixes it.
    rules = load_rules(DEFAULT_RULES_PATH)
    journal = AuditJournal(producer, prefix + "audit", "correlator")
    states: dict[int, BlockState] = {}
    alerts = []
    for agency, e in events:
        raw = encode(e)
        journal.record(AuditAction.EVENT_ACCEPTED, e.event_id, agency,
                       hashlib.sha256(raw).digest(), e.reported_at)
        block = e.subject.linkage_block
        states[block], raised = step(rules, states.get(block) or initial_state(), e)
        for alert in raised:
            alerts.append(alert)
            journal.record(AuditAction.ALERT_EMITTED, alert.alert_id, "correlator",
                           hashlib.sha256(encode(alert)).digest(), alert.raised_at)
    send_all(producer, [(prefix + "correlated", a.cluster_id.encode(), encode(a), None)
                        for a in alerts])
    journal.flush()
    producer.close()
    assert len(alerts) == 40  # every child reaches escalating once
    return {"prefix": prefix, "events": events, "alerts": alerts, "ns": ns}


def test_replay_reports_a_full_match(pipeline: dict[str, object], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "replay.json"
    # Two worker processes whatever the machine; the other tests use the default.
    code = main(["audit", "replay", "--report", str(report), "--no-progress", "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(report.read_text())
    assert data["ok"] is True
    assert data["events_replayed"] == 80 and data["ingress_records"] == 80
    assert data["matches"] == 40 and data["replayed_alerts"] == data["emitted_alerts"] == 40
    assert "OK" in out


def test_replay_with_a_changed_weight_names_exactly_the_alerts_that_differ(
        pipeline: dict[str, object], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    text = DEFAULT_RULES_PATH.read_text()
    changed = text.replace("UNEXPLAINED_GIFTS_OR_MONEY = 2.5", "UNEXPLAINED_GIFTS_OR_MONEY = 1.0")
    assert changed != text
    rules_file = tmp_path / "lighter-gifts.toml"
    rules_file.write_text(changed)
    # What the changed rules decide, computed directly: the children with the gifts sign now
    # score (2 + 1) * 1.5 = 4.5, emerging instead of escalating; the others are unchanged.
    other = parse_rules(changed.encode())
    affected = {a.cluster_id for a in pipeline["alerts"]  # type: ignore[attr-defined]
                if any(e.indicator == Sign.UNEXPLAINED_GIFTS_OR_MONEY for e in a.evidence)}
    assert len(affected) == 20 and other.version != load_rules(DEFAULT_RULES_PATH).version

    report = tmp_path / "replay.json"
    code = main(["audit", "replay", "--rules", str(rules_file), "--report", str(report),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    data = json.loads(report.read_text())
    assert data["matches"] == 20
    differing = {d["cluster_id"] for d in data["differences"]}
    assert differing == affected
    # Same cluster, lower tier: the escalating alert is not raised, an emerging one is.
    assert data["missing"] == 20 and data["unexpected"] == 20
    assert "EMERGING" in out and "ESCALATING" in out


def test_replay_names_a_missing_and_an_unexpected_alert(
        pipeline: dict[str, object], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prefix = str(pipeline["prefix"])
    alerts = pipeline["alerts"]
    forged = alerts[0].__class__(**{  # type: ignore[attr-defined]
        **{f: getattr(alerts[0], f) for f in alerts[0].__slots__},  # type: ignore[attr-defined]
        "alert_id": "f" * 32, "cluster_id": "e" * 32})
    producer = make_producer(_ns(pipeline).connection("correlator"), "test-replay-forge")
    send_all(producer, [(prefix + "correlated", b"x", encode(forged), None)])
    producer.close()
    report = tmp_path / "replay.json"
    code = main(["audit", "replay", "--report", str(report), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    data = json.loads(report.read_text())
    assert data["unexpected"] == 1 and data["missing"] == 0
    assert "f" * 32 in out
    # It was never journalled as emitted by the correlator, and replay says so.
    assert [d["alert_id"] for d in data["differences"] if d["kind"] == "unjournalled"] == [
        "f" * 32]


def _ns(pipeline: dict[str, object]) -> Namespace:
    ns = pipeline["ns"]
    assert isinstance(ns, Namespace)
    return ns


def _end_offsets(kafka: KafkaConnection, prefix: str) -> dict[tuple[str, int], int]:
    from kafka import TopicPartition

    from safehub.bus import make_consumer

    consumer = make_consumer(kafka, None)
    try:
        parts = [TopicPartition(t, p) for t in consumer.topics() if t.startswith(prefix)
                 for p in consumer.partitions_for_topic(t) or ()]
        return {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def test_replay_writes_nothing_and_catches_an_altered_event(
        pipeline: dict[str, object], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prefix = str(pipeline["prefix"])
    admin = _ns(pipeline).kafka
    # The correlator journalled bytes that are no longer on ingress: an event was altered.
    altered = hashlib.sha256(b"the bytes the correlator really saw").digest()
    producer = make_producer(_ns(pipeline).connection("correlator"), "test-replay-alter")
    journal = AuditJournal(producer, prefix + "audit", "correlator")
    journal.record(AuditAction.EVENT_ACCEPTED, "a" * 32, "police-test", altered, T0)
    journal.flush()
    producer.close()
    before = _end_offsets(admin, prefix)
    report = tmp_path / "replay.json"
    code = main(["audit", "replay", "--report", str(report), "--no-progress"])
    out = capsys.readouterr().out
    assert _end_offsets(admin, prefix) == before  # replay produced nothing
    assert code == 1
    data = json.loads(report.read_text())
    assert [d["kind"] for d in data["differences"]] == ["altered-event"]
    assert "event " + "a" * 32 in out
    assert data["matches"] == 40


def test_replay_checks_routed_alerts_and_inbox_rows(
        pipeline: dict[str, object], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from safehub.consumers.inbox.models import Base, InboxAlert, InboxEvidence
    from safehub.schemas.records import RoutedAlert
    from safehub.schemas.vocabulary import RouteReason

    prefix = str(pipeline["prefix"])
    alerts = pipeline["alerts"]
    good, other = alerts[0], alerts[1]  # type: ignore[index]
    tampered = replace(other, score=other.score + 1)
    producer = make_producer(_ns(pipeline).connection("router"), "test-replay-routed")
    send_all(producer, [
        (prefix + "alerts.hub-test", a.alert_id.encode(),
         encode(RoutedAlert(hex_id("n", a.alert_id), a, "hub-test", "E08000035",
                            RouteReason.RESPONSIBLE_AUTHORITY, 0, T0 + DAY)), None)
        for a in (good, tampered)])
    producer.close()

    inbox = tmp_path / "inbox.db"
    engine = create_engine(f"sqlite:///{inbox}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for a, score in ((good, good.score), (other, 99.0)):
            nid = hex_id("n", a.alert_id)
            session.add(InboxAlert(
                notification_id=nid, alert_id=a.alert_id, agency_id="hub-test",
                cluster_id=a.cluster_id, tier=str(a.tier), rule=a.rule, score=score,
                raised_at=a.raised_at, age_years=a.age_years, local_authority=a.local_authority,
                placing_authority=None, lead_authority="E08000035", reason="RESPONSIBLE_AUTHORITY",
                escalation_level=0, ack_deadline=T0 + DAY, rules_version=a.rules_version,
                agencies=" ".join(a.agencies), identity_conflict=False, digest=bytes(32),
                received_at=T0, status="NEW"))
            session.add_all(InboxEvidence(
                notification_id=nid, event_id=e.event_id, agency_id=e.agency_id,
                sector=str(e.sector), indicator=str(e.indicator), occurred_at=e.occurred_at,
                weight=e.weight) for e in a.evidence)
        session.commit()
    engine.dispose()

    report = tmp_path / "replay.json"
    code = main(["audit", "replay", "--report", str(report), "--no-progress",
                 "--inbox-db", f"sqlite:///{inbox}"])
    capsys.readouterr()
    assert code == 1
    data = json.loads(report.read_text())
    assert sorted((d["kind"], d["alert_id"]) for d in data["differences"]) == [
        ("inbox", other.alert_id), ("routed", other.alert_id)]
