"""Replay read throughput: how fast can an auditor read the ingress topics back?

Fills a fresh benchmark topic (6 partitions, like `ingress.<agency>`) with N encoded
WarningSignEvents, then reads it from the beginning to the end offsets, without a consumer group,
with each candidate client, several times, and keeps the median:

- kafka-python, through safehub.services.audit.reading.SnapshotReader (what replay uses),
  reading only, and reading plus the SHA-256 index replay builds;
- aiokafka (AIOKafkaConsumer.getmany), reading only;
- what replay uses: kafka-python plans the snapshot, aiokafka fetches, SHA-256 index built.

    SAFEHUB_KAFKA_BOOTSTRAP=127.0.0.1:19092 python -m bench.replay_bench [--events N]

writes bench/results/replay.json. Target: >= 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from safehub.bus import make_producer
from safehub.deploy.topics import TopicSpec, create_topics
from safehub.schemas.codec import encode
from safehub.schemas.records import MatchKeys, Subject, WarningSignEvent
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.audit.reading import Record, SnapshotReader, read_fast

RESULTS = Path(__file__).with_name("results") / "replay.json"
PARTITIONS = 6


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


def fill(bootstrap: str, topic: str, n: int) -> int:
    create_topics(bootstrap, [TopicSpec(topic, PARTITIONS, 1, {})])
    producer = make_producer(bootstrap, "replay-bench", linger_ms=20, batch_size=512 * 1024)
    size = 0
    for i in range(n):
        value = encode(_event(i))
        size += len(value)
        producer.send(topic, key=(i % 4096).to_bytes(4, "big"), value=value)
    producer.flush(300)
    producer.close()
    return size // n


def read_replay(bootstrap: str, topic: str) -> int:
    seen: dict[bytes, bytes] = {}

    def index(batch: list[Record]) -> None:
        for r in batch:
            if r.value is not None:
                seen[hashlib.sha256(r.value).digest()] = r.value

    return read_fast(bootstrap, [topic], index)


def read_kafka_python(bootstrap: str, topic: str, index: bool) -> int:
    reader = SnapshotReader(bootstrap, [topic], client_id="replay-bench")
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


async def _read_aiokafka(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_bytes=50 * 1024 * 1024,
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                isolation_level="read_committed")
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


def read_aiokafka(bootstrap: str, topic: str) -> int:
    return asyncio.run(_read_aiokafka(bootstrap, topic))


def measure(fn: Callable[[], int], runs: int, expected: int) -> dict[str, float]:
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
    args = parser.parse_args()
    bootstrap = os.environ.get("SAFEHUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    if args.topic:
        topic, avg = args.topic, len(encode(_event(0)))
    else:
        topic = f"bench-{uuid.uuid4().hex[:8]}.ingress.police-bench"
        t = time.perf_counter()
        avg = fill(bootstrap, topic, args.events)
        print(f"filled {topic} with {args.events} events of ~{avg} bytes "
              f"in {time.perf_counter() - t:.1f}s")
    results = {
        "kafka-python (SnapshotReader, read only)":
            measure(lambda: read_kafka_python(bootstrap, topic, False), args.runs, args.events),
        "kafka-python (SnapshotReader, read + SHA-256 index, as replay)":
            measure(lambda: read_kafka_python(bootstrap, topic, True), args.runs, args.events),
        "safehub replay reader (kafka-python plan + aiokafka fetch, read + SHA-256 index)":
            measure(lambda: read_replay(bootstrap, topic), args.runs, args.events),
        "aiokafka (getmany, read only)":
            measure(lambda: read_aiokafka(bootstrap, topic), args.runs, args.events),
    }
    for name, r in results.items():
        print(f"{name}: {r['events_per_s_median']:,} events/s (runs {r['events_per_s_runs']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "events": args.events, "partitions": PARTITIONS, "avg_event_bytes": avg,
        "broker": bootstrap, "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "python": platform.python_version(), "target_events_per_s": 50_000,
        "results": results,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
