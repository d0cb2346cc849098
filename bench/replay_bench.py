"""Replay read throughput: how fast can an auditor read the ingress topics back?

Fills a fresh benchmark topic (6 partitions, like `ingress.<agency>`) with N encoded
WarningSignEvents, then reads it from the beginning to the end offsets, without a consumer group,
with each candidate client, several times, and keeps the median:

- kafka-python, through safehub.services.audit.reading.SnapshotReader (what replay uses),
  reading only, and reading plus the SHA-256 index replay builds;
- aiokafka (AIOKafkaConsumer.getmany), reading only;
- what replay uses: kafka-python plans the snapshot, aiokafka fetches, SHA-256 index built.

    python -m bench.replay_bench [--events N]

on the secure cluster named by SAFEHUB_KAFKA_* (default: the local one), as its admin
principal, which makes each run's topics, credentials and ACLs from a small registry: the
agency `police-bench` publishes its ingress topic as itself, the correlator's journal and alerts
are written as the correlator, and every reader runs as the `auditor` (SASL_SSL, SCRAM-SHA-512,
read-only, no consumer group), as `safehub audit replay` does.

Then the whole replay, end to end (`safehub audit replay`'s own function, in process): a fresh
prefix gets an ingress topic of children's events (several per child, so clusters form and
alerts are raised), the correlator's journal on `audit` (EVENT_ACCEPTED per event in feeding
order, ALERT_EMITTED per alert) and the alerts on `correlated`, written here the way the
correlator writes them; replay then reads all three topics, routes the records to shards by
linkage block, decodes, runs `step` over every event and compares. It runs with one worker (all
in this process) and with the default (one process per core), alternating, `--runs` times each;
the median run of each is kept. The CPU part alone (routing, decode, step, compare over records
already in memory, in one process) is timed separately, so the figure says where the time goes.

writes bench/results/replay.json. Target (issue 7): >= 50,000 events/s for replay as a whole;
the reading figures show the Kafka client is not what stands in the way.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import TopicPartition

from safehub import topics
from safehub.bus import make_aio_consumer, make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.access import apply
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, validate
from safehub.deploy.topics import (
    broker_count,
    create_topics,
    delete_topics_with_prefix,
    registry_specs,
)
from safehub.schemas.codec import encode
from safehub.schemas.records import MatchKeys, Subject, WarningSignEvent
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.audit.reading import Fetched, SnapshotReader, read_fast

RESULTS = Path(__file__).with_name("results") / "replay.json"
PARTITIONS = 6
AGENCY = "police-bench"
REGISTRY = Registry(validate((Party(AGENCY, Kind.AGENCY, Sector.POLICE),
                              Party("correlator", Kind.SERVICE),
                              Party("auditor", Kind.AUDITOR)), "replay bench"))


def bench_namespace(admin: KafkaConnection, prefix: str) -> None:
    """The bench registry's topics (ingress with PARTITIONS partitions, as topics.toml has
    it), its principals' credentials and their ACLs under `prefix`, made as the admin."""
    specs = registry_specs(REGISTRY, broker_count(admin), prefix)
    assert all(s.partitions == PARTITIONS for s in specs
               if topics.in_family(s.name, topics.Family.INGRESS, prefix)), specs
    create_topics(admin, specs)
    apply(admin, REGISTRY, prefix)
TARGET_EVENTS_PER_S = 50_000


def _event(i: int) -> WarningSignEvent:
    h = hashlib.sha256(i.to_bytes(8, "big")).digest()
    subject = Subject(MatchKeys(mk1=h, mk2=hashlib.sha256(h).digest(),
                                mk3=hashlib.sha256(h + b"3").digest(),
                                mk4=hashlib.sha256(h + b"4").digest()),
                      1, i % 4096, 14, "E08000035", None, h.hex()[:32])
    signs = list(Sign)
    at = 1_760_000_000_000 + i * 1000
    return WarningSignEvent(h.hex()[32:], "police-bench", Sector.POLICE, at, at, subject,
                            signs[i % len(signs)])


def fill(admin: KafkaConnection, prefix: str, n: int) -> int:
    bench_namespace(admin, prefix)
    topic = topics.ingress(prefix, AGENCY)
    producer = make_producer(admin.as_principal(AGENCY), "replay-bench", linger_ms=20,
                             batch_size=512 * 1024)
    size = 0
    for i in range(n):
        value = encode(_event(i))
        size += len(value)
        producer.send(topic, key=(i % 4096).to_bytes(4, "big"), value=value)
    producer.flush(300)
    producer.close()
    return size // n


def read_replay(auditor: KafkaConnection, topic: str) -> int:
    seen: dict[bytes, bytes] = {}

    def index(batch: list[Fetched]) -> None:
        for r in batch:
            if r.value is not None:
                seen[hashlib.sha256(r.value).digest()] = r.value

    return read_fast(auditor, [topic], index)


def read_kafka_python(auditor: KafkaConnection, topic: str, index: bool) -> int:
    reader = SnapshotReader(auditor, [topic], client_id="replay-bench")
    count = 0
    seen: dict[bytes, bytes] = {}
    try:
        for batch in reader.batches():
            count += len(batch)
            if index:
                for r in batch:
                    if r.value is not None:
                        seen[hashlib.sha256(r.value).digest()] = r.value
    finally:
        reader.close()
    return count


async def _read_aiokafka(auditor: KafkaConnection, topic: str) -> int:
    consumer = make_aio_consumer(auditor, "replay-bench")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        end = await consumer.end_offsets(parts)
        start = await consumer.beginning_offsets(parts)
        for tp in parts:
            consumer.seek(tp, start[tp])
        count = 0
        pending = {tp for tp in parts if end[tp] > 0}
        while pending:
            got = await consumer.getmany(*pending, timeout_ms=1000, max_records=20_000)
            for recs in got.values():
                count += len(recs)
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        return count
    finally:
        await consumer.stop()


def read_aiokafka(auditor: KafkaConnection, topic: str) -> int:
    return asyncio.run(_read_aiokafka(auditor, topic))


DAY_MS = 86_400_000


def _child_event(i: int) -> WarningSignEvent:
    """Event `i`: children of six events each, five days apart, so clusters reach alerts."""
    child, n = divmod(i, 6)
    h = hashlib.sha256(b"child" + child.to_bytes(8, "big")).digest()
    subject = Subject(MatchKeys(mk2=h), 1, child % 4096, 14, "E08000035", None, h.hex()[:32])
    signs = list(Sign)
    at = 1_760_000_000_000 + child * 60_000 + n * 5 * DAY_MS
    eid = hashlib.sha256(b"event" + i.to_bytes(8, "big")).hexdigest()[:32]
    return WarningSignEvent(eid, "police-bench", Sector.POLICE, at, at, subject,
                            signs[(child + 7 * n) % len(signs)])


def fill_pipeline(admin: KafkaConnection, prefix: str, n: int) -> tuple[int, int]:
    """Ingress, journal and alerts for `n` events, as the correlator leaves them.

    Returns (events, alerts)."""
    from safehub.schemas.vocabulary import AuditAction
    from safehub.services.audit.journal import AuditJournal
    from safehub.services.correlation.core import BlockState, initial_state, step
    from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules

    bench_namespace(admin, prefix)
    rules = load_rules(DEFAULT_RULES_PATH)
    # The agency writes its ingress topic, the correlator its journal and alerts.
    agency = make_producer(admin.as_principal(AGENCY), "replay-bench", linger_ms=20,
                           batch_size=512 * 1024)
    producer = make_producer(admin.as_principal("correlator"), "replay-bench", linger_ms=20,
                             batch_size=512 * 1024)
    journal = AuditJournal(producer, topics.audit(prefix), "correlator")
    states: dict[int, BlockState] = {}
    alerts = 0
    for i in range(n):
        event = _child_event(i)
        raw = encode(event)
        block = event.subject.linkage_block
        agency.send(topics.ingress(prefix, AGENCY), key=block.to_bytes(4, "big"), value=raw)
        states[block], raised = step(rules, states.get(block) or initial_state(), event)
        journal.record(AuditAction.EVENT_ACCEPTED, event.event_id, event.agency_id,
                       hashlib.sha256(raw).digest(), event.reported_at)
        for alert in raised:
            data = encode(alert)
            producer.send(topics.correlated(prefix), key=alert.cluster_id.encode(), value=data)
            journal.record(AuditAction.ALERT_EMITTED, alert.alert_id, "correlator",
                           hashlib.sha256(data).digest(), alert.raised_at)
            alerts += 1
        if i % 20_000 == 0:
            agency.flush(300)
            journal.flush(300)  # bounds the futures held in memory
    agency.flush(300)
    journal.flush(300)
    agency.close()
    producer.close()
    return n, alerts


def full_replay(auditor: KafkaConnection, prefix: str, report: Path, workers: int
                ) -> dict[str, object]:
    """`safehub audit replay` end to end, then its CPU part alone on the same records."""
    from safehub.services.audit.auditor import run_replay
    from safehub.services.audit.command import AuditSettings
    from safehub.services.audit.reading import read_all
    from safehub.services.audit.replay import ReplayReport
    from safehub.services.audit.sharding import ShardJob, replay_shard, shard_count, split

    args = argparse.Namespace(agency=[], from_ms=None, rules=None, inbox_db=[], report=report,
                              no_progress=True, workers=workers)
    start = time.perf_counter()
    code = run_replay(args, AuditSettings(auditor, prefix, "sqlite://"))
    wall = time.perf_counter() - start
    result = json.loads(report.read_text())
    if code != 0:
        raise SystemExit(f"replay did not match: {result}")

    audit = [r.value or b"" for r in read_all(auditor, [topics.audit(prefix)])]
    alerts = [(str(r.offset), r.value) for r in read_all(auditor, [topics.correlated(prefix)])]
    ingress = {hashlib.sha256(r.value).digest(): (r.value, r.key)
               for r in read_all(auditor, [topics.ingress(prefix, AGENCY)]) if r.value}
    t = time.perf_counter()
    cpu_report = ReplayReport()
    shards = split(audit, alerts, ingress, shard_count(len(ingress), 1), None, cpu_report)
    for shard in shards.shards:
        outcome = replay_shard(ShardJob(shard, None, shards.fallback_version or "", None))
        cpu_report.differences += outcome.report.differences
    cpu = time.perf_counter() - t
    if not cpu_report.ok:
        raise SystemExit("in-memory replay did not match")
    events = int(result["events_replayed"])
    read = int(result["ingress_records"]) + len(audit) + len(alerts)
    return {
        "events": events, "alerts": int(result["emitted_alerts"]), "workers": workers,
        "records_read": read, "seconds": round(wall, 2),
        "events_per_s": round(events / wall),
        "records_read_per_s": round(read / wall),
        "cpu_only_one_process_seconds": round(cpu, 2),
        "cpu_only_one_process_events_per_s": round(events / cpu),
        # The target is for replay as a whole, not only for reading the topics.
        "meets_target": events / wall >= TARGET_EVENTS_PER_S,
    }


def measure(fn: Callable[[], int], runs: int, expected: int) -> dict[str, object]:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        count = fn()
        elapsed = time.perf_counter() - start
        if count != expected:
            raise SystemExit(f"read {count} records, expected {expected}")
        rates.append(count / elapsed)
    return {"events_per_s_median": round(statistics.median(rates)),
            "events_per_s_runs": [round(r) for r in rates]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--topic", help="reuse a topic filled by an earlier run")
    parser.add_argument("--full-events", type=int, default=60_000,
                        help="events for the end-to-end replay (0: skip it)")
    args = parser.parse_args()
    admin = KafkaConnection.from_env(ADMIN)
    auditor = admin.as_principal("auditor")
    if args.topic:
        topic, avg = args.topic, len(encode(_event(0)))
    else:
        prefix = f"bench-{uuid.uuid4().hex[:8]}."
        topic = topics.ingress(prefix, AGENCY)
        t = time.perf_counter()
        avg = fill(admin, prefix, args.events)
        print(f"filled {topic} with {args.events} events of ~{avg} bytes "
              f"in {time.perf_counter() - t:.1f}s")
    results = {
        "kafka-python (SnapshotReader, read only)":
            measure(lambda: read_kafka_python(auditor, topic, False), args.runs, args.events),
        "kafka-python (SnapshotReader, read + SHA-256 index, as replay)":
            measure(lambda: read_kafka_python(auditor, topic, True), args.runs, args.events),
        "safehub replay reader (kafka-python plan + aiokafka fetch, read + SHA-256 index)":
            measure(lambda: read_replay(auditor, topic), args.runs, args.events),
        "aiokafka (getmany, read only)":
            measure(lambda: read_aiokafka(auditor, topic), args.runs, args.events),
    }
    for name, r in results.items():
        print(f"{name}: {r['events_per_s_median']:,} events/s (runs {r['events_per_s_runs']})")
    full: dict[str, object] | None = None
    if args.full_events:
        prefix = f"bench-{uuid.uuid4().hex[:8]}."
        full = {}
        try:
            t = time.perf_counter()
            events, alerts = fill_pipeline(admin, prefix, args.full_events)
            print(f"filled {prefix}* with {events} events, their journal and {alerts} alerts "
                  f"in {time.perf_counter() - t:.1f}s")
            # One process, then the default (one per core), alternating so that both see the
            # same machine; the median run of each is kept.
            cores = os.cpu_count() or 1
            runs: dict[int, list[dict[str, object]]] = {1: [], cores: []}
            with tempfile.TemporaryDirectory() as scratch:
                for _ in range(args.runs):
                    for workers, kept in runs.items():
                        kept.append(full_replay(auditor, prefix,
                                                Path(scratch) / "replay-report.json", workers))
        finally:
            delete_topics_with_prefix(admin, prefix)
        for workers, kept in runs.items():
            kept.sort(key=lambda r: float(r["events_per_s"]))  # type: ignore[arg-type]
            median = dict(kept[len(kept) // 2])
            median["events_per_s_runs"] = [r["events_per_s"] for r in kept]
            full[f"workers={workers}"] = median
            print(f"full replay, {workers} worker(s): {median['events']:,} events, "
                  f"{median['alerts']:,} alerts in {median['seconds']} s: "
                  f"{median['events_per_s']:,} events/s (runs {median['events_per_s_runs']}); "
                  f"decode + step + compare alone in one process "
                  f"{median['cpu_only_one_process_events_per_s']:,} events/s")
        full["meets_target"] = any(bool(r["meets_target"]) for r in full.values()
                                   if isinstance(r, dict))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "events": args.events, "partitions": PARTITIONS, "avg_event_bytes": avg,
        "broker": admin.bootstrap,
        "transport": "SASL_SSL, SCRAM-SHA-512 (readers as the auditor principal)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "python": platform.python_version(), "target_events_per_s": TARGET_EVENTS_PER_S,
        "results": results,
        "reading_meets_target": all(r["events_per_s_median"] >= TARGET_EVENTS_PER_S
                                    for name, r in results.items() if "safehub" in name),
        "full_replay (read ingress + audit + correlated, decode, step, compare)": full,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
