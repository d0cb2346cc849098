"""A malformed flood through the correlator: 100,000 refused records, one valid in the middle.

    python -m bench.flood_bench [--malformed N] [--past-the-look]

On the secure cluster named by SAFEHUB_KAFKA_BOOTSTRAP / SAFEHUB_KAFKA_SECRETS /
SAFEHUB_KAFKA_CA_FILE (default: the local one, `safehub kafka up`), as its admin principal.
Fresh prefixed topics and ACLs; `safehub correlator` as its own principal (one worker, six
partitions); one agency, as itself, sends N records the contract refuses (garbage under a block
key, garbage without a key, empty values) as fast as its producer goes, with one valid event
of its own after the first half, and right after it another agency sends one valid event.
With --past-the-look the refused records are made to pass the correlator's cheap look (a block
key and an ingress schema header: samples.records.malformed_past_the_look), and the figures go
to bench/results/flood-past-the-look.json.
Measured: how long after its send each valid event's EVENT_ACCEPTED entry was written to
`audit`, and how long after the flood's start the last dead letter was written to `deadletter`
(by the records' CreateTime, stamped by the worker's producer on this machine's clock: the
bench's own reading of 200,000 records lags behind the worker, and is not counted); dead
letters counted by their source partition and offset (duplicates must be 0, missing 0).
Writes bench/results/flood.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from safehub import topics
from safehub.bus import make_consumer, make_producer, send_all
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION
from safehub.deploy.access import apply
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, Service, validate
from safehub.deploy.topics import create_topics, delete_topics_with_prefix, registry_specs
from safehub.samples.records import malformed_ingress, malformed_past_the_look
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, MatchKeys, Subject, WarningSignEvent
from safehub.schemas.vocabulary import AuditAction, Sector, Sign
from safehub.services.correlation.linking import block_key
from safehub.services.correlator.command import READY

RESULTS = Path(__file__).resolve().parent / "results"
AGENCY = "police-flood"
BYSTANDER = "health-bystander"  # another agency, sending one valid event during the flood
HUB = "csc-flood"
TIMEOUT_S = 900.0


def bench_registry() -> Registry:
    parties = [Party(AGENCY, Kind.AGENCY, Sector.POLICE),
               Party(BYSTANDER, Kind.AGENCY, Sector.HEALTH), Party(HUB, Kind.HUB)]
    parties += [Party(s.value, Kind.SERVICE) for s in Service]
    return Registry(validate(parties, "flood bench registry"))


def valid_event(agency: str = AGENCY, sector: Sector = Sector.POLICE,
                block: int = 77) -> WarningSignEvent:
    at = int(time.time() * 1000) - 86_400_000
    subject = Subject(MatchKeys(mk1=hashlib.sha256(agency.encode()).digest()), 1, block, 14,
                      "E08000035", None, "d" * 32)
    sign = Sign.MISSING_FROM_HOME_OR_CARE if sector is Sector.POLICE else Sign.REPEAT_STI
    return WarningSignEvent(uuid.uuid4().hex, agency, sector, at, at, subject, sign)


def reader(admin: KafkaConnection, topic: str) -> KafkaConsumer:
    consumer = make_consumer(admin, None, client_id="bench-flood-reader")
    deadline = time.monotonic() + 30
    while not (parts := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise SystemExit(f"topic {topic} has no partitions")
        time.sleep(0.1)
        consumer.topics()
    consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
    consumer.seek_to_beginning()
    return consumer


def settle(admin: KafkaConnection, names: list[str], at_least: int,
           proc: subprocess.Popen[bytes], quiet_s: float = 3.0) -> None:
    """Wait until the first of `names` holds at least `at_least` offsets and none has grown
    for `quiet_s` (or the worker has exited, or TIMEOUT_S)."""
    consumer = make_consumer(admin, None, client_id="bench-flood-settle")
    try:
        parts = [TopicPartition(n, p) for n in names
                 for p in sorted(consumer.partitions_for_topic(n) or ())]
        first = [tp for tp in parts if tp.topic == names[0]]
        last: dict[TopicPartition, int] = {}
        since = start = time.monotonic()
        while time.monotonic() - start < TIMEOUT_S and proc.poll() is None:
            ends = consumer.end_offsets(parts)
            if ends != last:
                last, since = ends, time.monotonic()
            elif (time.monotonic() - since >= quiet_s
                  and sum(ends[tp] for tp in first) >= at_least):
                return
            time.sleep(0.5)
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--malformed", type=int, default=100_000)
    parser.add_argument("--past-the-look", action="store_true")
    args = parser.parse_args()
    result = run(args.malformed, args.past_the_look)
    RESULTS.mkdir(exist_ok=True)
    name = "flood-past-the-look.json" if args.past_the_look else "flood.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["duplicates"] == 0 and result["missing"] == 0 else 1


def run(count: int, past_the_look: bool = False) -> dict[str, Any]:
    admin = KafkaConnection.from_env(ADMIN)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    registry = bench_registry()
    create_topics(admin, registry_specs(registry, 1, prefix))
    apply(admin, registry, prefix)
    tmp = Path(tempfile.mkdtemp(prefix="safehub-flood-"))
    cmd = (shutil.which("safehub") or f"{sys.executable} -m safehub.cli").split()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_KAFKA_")},
           **admin.as_principal(Service.CORRELATOR).env(), "SAFEHUB_TOPIC_PREFIX": prefix,
           "SAFEHUB_CORRELATOR_DATA_DIR": str(tmp / "correlator")}
    log = tmp / "correlator.log"
    proc = subprocess.Popen([*cmd, "correlator"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    producer = make_producer(admin.as_principal(AGENCY), "bench-flood")
    bystander = make_producer(admin.as_principal(BYSTANDER), "bench-flood-bystander")
    audit = reader(admin, topics.audit(prefix))
    dead = reader(admin, topics.deadletter(prefix))
    try:
        deadline = time.monotonic() + 120
        while READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"correlator did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        ingress = topics.ingress(prefix, AGENCY)
        records = [(ingress, *(malformed_past_the_look(n, AGENCY) if past_the_look
                                else malformed_ingress(n)), None) for n in range(count)]
        event = valid_event()
        other = valid_event(BYSTANDER, Sector.HEALTH, 78)
        half = count // 2
        t0 = time.monotonic()
        t0_wall = time.time()
        last_dead_ts = 0.0
        reports = send_all(producer, records[:half])
        valid_wall = time.time()
        valid_report = send_all(producer, [(ingress, block_key(77), encode(event), None)])[0]
        other_start = time.time()
        other_key = block_key(other.subject.linkage_block)
        send_all(bystander, [(topics.ingress(prefix, BYSTANDER), other_key, encode(other), None)])
        other_wall = time.time()
        reports += send_all(producer, records[half:])
        sent = time.monotonic()
        # Nothing is read while the worker works: on this 2-core machine the bench's reading
        # of 200,000 records took CPU from the worker. The figures come from the records'
        # CreateTimes, read once the topics have stopped growing.
        settle(admin, [topics.deadletter(prefix), topics.audit(prefix)], count, proc)
        expected = {(r.partition, r.offset) for r in reports}
        origins: Counter[tuple[int, int]] = Counter()
        valid_ts: float | None = None  # the EVENT_ACCEPTED entry's CreateTime, s
        other_ts: float | None = None
        while valid_ts is None or other_ts is None or sum(origins.values()) < count:
            if time.monotonic() - t0 > TIMEOUT_S or proc.poll() is not None:
                break
            for batch in audit.poll(timeout_ms=50).values():
                for r in batch:
                    entry = decode(r.value, AuditEntry)
                    if (entry.action is AuditAction.EVENT_ACCEPTED
                            and entry.subject_id == event.event_id):
                        valid_ts = r.timestamp / 1000
                    if (entry.action is AuditAction.EVENT_ACCEPTED
                            and entry.subject_id == other.event_id):
                        other_ts = r.timestamp / 1000
            for batch in dead.poll(timeout_ms=50).values():
                for r in batch:
                    h = dict(r.headers)
                    origins[(int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET]))] += 1
                    last_dead_ts = max(last_dead_ts, r.timestamp / 1000)
        # Anything sent twice a moment after the last one counted.
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for batch in dead.poll(timeout_ms=200).values():
                for r in batch:
                    h = dict(r.headers)
                    origins[(int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET]))] += 1
    finally:
        producer.close()
        bystander.close()
        audit.close()
        dead.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        delete_topics_with_prefix(admin, prefix)
    all_s = last_dead_ts - t0_wall
    return {
        "malformed": count,
        "past_the_look": past_the_look,
        "valid_events": 1,
        "partitions": 6,
        "send_s": round(sent - t0, 2),
        "valid_output_after_flood_start_s": (None if valid_ts is None
                                             else round(valid_ts - t0_wall, 2)),
        "valid_output_after_its_send_s": (None if valid_ts is None
                                          else round(valid_ts - valid_wall, 2)),
        "valid_offset": valid_report.offset,
        "other_agency_output_after_its_send_s": (None if other_ts is None
                                                 else round(other_ts - other_start, 2)),
        "other_agency_send_s": round(other_wall - other_start, 3),
        "dead_letters_counted": len(origins),
        "duplicates": sum(n - 1 for n in origins.values() if n > 1),
        "missing": len(expected - set(origins)),
        "all_dead_lettered_s": round(all_s, 2),
        "dead_letters_per_s": round(len(origins) / all_s) if all_s > 0 else None,
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    raise SystemExit(main())
