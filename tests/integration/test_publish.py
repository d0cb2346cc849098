"""The publisher against the real broker: delivery reports, re-sends, bad lines, broker restart."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from safehub import cli
from safehub.bus import make_producer
from safehub.deploy.access import apply
from safehub.deploy.registry import Kind, Party, Registry
from safehub.deploy.topics import TopicSpec, create_topics
from safehub.producers.matchkeys import message_key
from safehub.producers.publisher import DeliveryReport, Outcome, Publisher
from safehub.producers.records import MissingEpisodeRecord
from safehub.producers.vault import Vault
from safehub.samples.children import KEY, children, sign_records
from safehub.schemas import codec
from safehub.schemas.records import MissingEpisodeEvent, WarningSignEvent
from safehub.schemas.vocabulary import MissingType, Sector
from tests.fixtures.topics import read_all

pytestmark = pytest.mark.integration


@pytest.fixture
def vault(tmp_path: Path):
    v = Vault.open(f"sqlite:///{tmp_path / 'vault.db'}")
    yield v
    v.close()


def test_publish_and_resend_adds_no_event_ids(secure_namespace, vault: Vault) -> None:
    ns = secure_namespace(agencies={"school-leeds": "EDUCATION"}, partitions=3)
    prefix, topic = ns.prefix, ns.ingress("school-leeds")
    kids = children(150, seed=11)
    records = sign_records(kids, "SCH")
    # The agency publishes as itself; the test reads as admin (no agency may read).
    producer = make_producer(ns.connection("school-leeds"), "test-publisher")
    try:
        publisher = Publisher(producer, vault, KEY, "school-leeds", Sector.EDUCATION, prefix,
                              batch_size=64)
        first = publisher.publish_many(records)
        assert all(isinstance(o, DeliveryReport) for o in first)
        episode = MissingEpisodeRecord(
            "SCH-MISS-1", kids[0], "E08000035", records[0].occurred_at, MissingType.ABSENT,
            ended_at=records[0].occurred_at + 3_600_000, return_interview_offered=True,
            person_ref=records[0].person_ref)
        report = publisher.publish_missing_episode(episode)
        assert report.topic == topic and report.event_id != first[0].event_id  # type: ignore[union-attr]
        single = publisher.publish(records[3])
        assert single.event_id == first[3].event_id  # type: ignore[union-attr]
        once = read_all(ns.kafka, topic)
        counts = vault.counts("school-leeds")
        again = publisher.publish_many(records)
        assert all(isinstance(o, DeliveryReport) for o in again)
    finally:
        producer.close()
    twice = read_all(ns.kafka, topic)
    ids_once = {codec.decode(r.value).event_id for r in once}
    ids_twice = Counter(codec.decode(r.value).event_id for r in twice)
    assert len(ids_once) == 151 and set(ids_twice) == ids_once  # nothing new for the hub
    assert vault.counts("school-leeds") == counts == (150, 151)
    # A re-sent record is byte-identical (same handle from the vault), so it is a pure duplicate.
    values: dict[str, set[bytes]] = {}
    for r in twice:
        values.setdefault(codec.decode(r.value).event_id, set()).add(r.value)
    assert all(len(v) == 1 for v in values.values())
    # Keyed by linkage block; one block lands in one partition.
    partition_of: dict[bytes, set[int]] = {}
    for r in twice:
        event = codec.decode(r.value)
        assert isinstance(event, (WarningSignEvent, MissingEpisodeEvent))
        assert r.key == message_key(event.subject.linkage_block)
        assert event.subject.key_epoch == 2 and event.agency_id == "school-leeds"
        partition_of.setdefault(r.key, set()).add(r.partition)
        resolved = vault.resolve("school-leeds", event.subject.reid_handle)
        assert resolved is not None and resolved.person_ref is not None
    assert all(len(p) == 1 for p in partition_of.values())


def test_cli_reports_bad_lines_by_number_and_exits_non_zero(
    secure_namespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = secure_namespace(agencies={"police-wy": "POLICE"})
    topic = ns.ingress("police-wy")
    export = tmp_path / "incidents.csv"
    export.write_text(
        "IncidentRef,NominalId,Forename,Surname,DOB,HomePostcode,ResponsibleLA,PlacingLA,"
        "IncidentDateTime,RecordedDateTime,ConcernCode,MissingCategory,FoundDateTime,"
        "RHIOffered,RHIDone\n"
        "R1,N1,Cloe,Featherstone,14/03/2009,LS9 8AB,E08000035,,02/03/2024 23:10,,CAR,,,,\n"
        "R2,N2,Precious,Ramsbottom,31/02/2009,LS6 2QT,E08000035,,02/03/2024 23:10,,OFF,,,,\n"
        "R3,N3,Kieran,Blackwood,01/05/2010,Acacia Avenue,E08000035,,02/03/2024 23:10,,OFF,,,,\n"
        "R4,N4,Tiegan,Whitfield,01/05/2010,BD7 1XY,E08000035,,03/03/2024 01:00,,UNKNOWN,,,,\n"
        "R5,N5,Callum,Pemberton,01/06/2010,BD7 1XY,E08000032,,04/03/2024 10:00,,MISPER,M,"
        "04/03/2024 18:00,Y,Y\n"
    )
    # The cluster and the secrets folder, but no principal: --agency names it.
    for name, value in ns.env("police-wy").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SAFEHUB_KAFKA_PRINCIPAL")
    monkeypatch.delenv("SAFEHUB_KAFKA_PASSWORD_FILE")
    monkeypatch.setenv("SAFEHUB_LINKAGE_KEY", KEY.secret.hex())
    monkeypatch.setenv("SAFEHUB_VAULT_URL", f"sqlite:///{tmp_path / 'v.db'}")
    code = cli.main(["publish", "--agency", "police-wy", "--from", str(export),
                     "--sector", "police"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "incidents.csv: line 3: date_of_birth: not a date in format DD/MM/YYYY" in err
    assert "incidents.csv: line 4: postcode: not a UK postcode" in err
    assert "incidents.csv: line 5: indicator: code not in the column mapping" in err
    assert "published 2 event(s)" in out and "3 line(s) failed" in out
    for value in ("31/02/2009", "Acacia", "Ramsbottom", "Blackwood", "UNKNOWN"):
        assert value not in err + out
    assert len(read_all(ns.kafka, topic)) == 2


@pytest.mark.slow
def test_broker_restart_during_publish_loses_nothing(tmp_path: Path, vault: Vault) -> None:
    from safehub.deploy.kafka.launcher import Cluster

    cluster = Cluster(f"publish-restart-{uuid.uuid4().hex[:8]}")
    state = cluster.up(nodes=1)
    try:
        admin = state.connection()
        topic = "ingress.police-restart"
        create_topics(admin, [TopicSpec(topic, 2, 1, {})])
        apply(admin, Registry((Party("police-restart", Kind.AGENCY, Sector.POLICE),)))
        records = sign_records(children(12000, seed=5), "INC")
        outcomes: list[Outcome] = []
        failure: list[BaseException] = []
        producer = make_producer(state.connection("police-restart"), "test-restart",
                                 reconnect_backoff_max_ms=1000)

        def publish() -> None:
            try:
                publisher = Publisher(producer, vault, KEY, "police-restart", Sector.POLICE,
                                      batch_size=250)
                publisher.publish_many(records, outcomes.append)
            except Exception as exc:  # noqa: BLE001 - re-raised by the main thread's assert
                failure.append(exc)

        worker = threading.Thread(target=publish)
        worker.start()
        deadline = time.monotonic() + 120
        while len(outcomes) < 1500 and worker.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert worker.is_alive(), "publish finished before the broker could be restarted"
        cluster.kill_node(1)
        killed_at = len(outcomes)
        time.sleep(2)
        cluster.restart_node(1)
        cluster.wait_ready(1)
        worker.join(timeout=300)
        producer.close()
        assert not worker.is_alive() and not failure, failure
        assert killed_at < len(records)
        reports = [o for o in outcomes if isinstance(o, DeliveryReport)]
        on_topic = Counter(codec.decode(r.value).event_id for r in read_all(admin, topic))
        assert max(on_topic.values()) == 1, "an event id is on the topic twice"
        assert {r.event_id for r in reports} <= set(on_topic), "an acknowledged event is missing"
        assert len(reports) == len(records), Counter(type(o).__name__ for o in outcomes)
    finally:
        cluster.down(purge=True)
