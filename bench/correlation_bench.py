"""Correlation: the core's cost per event, and the processor's sustained throughput on one worker.

Writes bench/results/correlation.json. Run against the local secure cluster (`safehub kafka up`)
or the one SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_KAFKA_SECRETS and SAFEHUB_KAFKA_CA_FILE name, as its
admin principal (which makes each run's topics, principals and ACLs):

    python -m bench.correlation_bench [--events N]

Every client authenticates as its own principal over SASL_SSL (SCRAM-SHA-512), as in production:
the agencies publish, the correlator (and the plain consumer of the baseline) read as
`correlator` with exactly its ACLs; the benchmark's topics are deleted after each run.

1. Core: `step` over a synthetic population (children spread over the 4096 linkage blocks,
   signs from three agencies over a year, in event-time order), timed per event; also the
   block-state size per tracked child, and the per-event cost of decode + validate + step.
2. Processor: N events are put on three agencies' ingress topics (6 partitions each) first;
   then one `safehub correlator` worker reads that backlog. Its sustained rate is N over the
   span between its first and last EVENT_ACCEPTED audit entries (broker timestamps), so faust's
   start-up and group join are not counted. Every event is fully processed: decoded,
   validated, stepped, journalled, its block's state written to the changelog table, alerts
   sent and acknowledged.
3. Baseline: a plain kafka-python consumer reads the same topics from the beginning, doing
   nothing with the records; ratio = processor rate / plain consumer rate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from safehub import topics
from safehub.bus import make_consumer, make_producer, send_all
from safehub.connection import KafkaConnection
from safehub.deploy.access import apply
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, validate
from safehub.deploy.topics import (
    broker_count,
    create_topics,
    delete_topics_with_prefix,
    registry_specs,
)
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, MatchKeys, Subject, WarningSignEvent
from safehub.schemas.validation import validate_ingress
from safehub.schemas.vocabulary import AuditAction, Sector, Sign, Vulnerability
from safehub.services.correlation import snapshot
from safehub.services.correlation.core import BlockState, initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.command import DEFAULT_BATCH

AGENCIES = {"police-b": Sector.POLICE, "health-b": Sector.HEALTH, "school-b": Sector.EDUCATION}
BLOCKS = 4096
PARTITIONS = 6
DAY = 86_400_000
T0 = 1_750_000_000_000
RESULTS = Path(__file__).with_name("results") / "correlation.json"
SERVICES = (Party("correlator", Kind.SERVICE), Party("router", Kind.SERVICE),
            Party("audit-sink", Kind.SERVICE), Party("auditor", Kind.AUDITOR))


def population(n_events: int, children: int, seed: int = 5) -> list[WarningSignEvent]:
    rnd = random.Random(seed)
    indicators = [*Sign, *Vulnerability]
    out = []
    for i in range(n_events):
        c = rnd.randrange(children)
        keys = MatchKeys(*(hashlib.sha256(f"{seed}:{c}:{k}".encode()).digest() for k in "1234"))
        agency = rnd.choice(sorted(AGENCIES))
        when = T0 + i * (365 * DAY // n_events)
        subject = Subject(keys, 1, c % BLOCKS, 14, "E08000035", None,
                          hashlib.md5(f"r{i}".encode()).hexdigest())
        out.append(WarningSignEvent(hashlib.md5(f"{seed}e{i}".encode()).hexdigest(), agency,
                                    AGENCIES[agency], when, when, subject,
                                    rnd.choice(indicators)))
    return out


def bench_core(n_events: int) -> dict[str, float]:
    rules = load_rules(DEFAULT_RULES_PATH)
    events = population(n_events, children=20_000)
    states: dict[int, BlockState] = defaultdict(initial_state)
    alerts = 0
    start = time.perf_counter()
    for e in events:
        block = e.subject.linkage_block
        states[block], raised = step(rules, states[block], e)
        alerts += len(raised)
    core_s = time.perf_counter() - start
    clusters = sum(len(s.clusters) for s in states.values())
    size = sum(len(snapshot.encode(s)) for s in states.values())
    encoded = [encode(e) for e in events[:20_000]]
    now = T0 + 400 * DAY
    states2: dict[int, BlockState] = defaultdict(initial_state)
    start = time.perf_counter()
    for data in encoded:
        ev = decode(data, WarningSignEvent)
        validate_ingress(ev, ev.agency_id, now)
        b = ev.subject.linkage_block
        states2[b], _ = step(rules, states2[b], ev)
    full_s = time.perf_counter() - start
    return {
        "events": n_events,
        "alerts": alerts,
        "core_us_per_event": round(core_s / n_events * 1e6, 2),
        "core_events_per_s": int(n_events / core_s),
        "decode_validate_step_us_per_event": round(full_s / len(encoded) * 1e6, 2),
        "tracked_children": clusters,
        "state_bytes_per_tracked_child": round(size / max(clusters, 1), 1),
    }


def _read_all(kafka: KafkaConnection, names: list[str], expected: int) -> float:
    consumer = make_consumer(kafka, None, client_id="bench-plain")
    tps = [TopicPartition(t, p) for t in names for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    got = 0
    start = time.perf_counter()
    while got < expected:
        for batch in consumer.poll(timeout_ms=500).values():
            got += len(batch)
    elapsed = time.perf_counter() - start
    consumer.close()
    return expected / elapsed


def bench_namespace(admin: KafkaConnection, prefix: str) -> Registry:
    """This run's registry (AGENCIES and the services), its topics (the ingress topics and the
    table's changelog with PARTITIONS partitions, as topics.toml has them), credentials and
    ACLs, made as the admin."""
    parties = [Party(a, Kind.AGENCY, sector) for a, sector in AGENCIES.items()]
    registry = Registry(validate((*parties, Party("csc-b", Kind.HUB), *SERVICES), "bench"))
    specs = registry_specs(registry, broker_count(admin), prefix)
    for spec in specs:
        if (topics.in_family(spec.name, topics.Family.INGRESS, prefix)
                or spec.name == topics.changelog_topic(prefix)):
            assert spec.partitions == PARTITIONS, spec
    create_topics(admin, specs)
    apply(admin, registry, prefix)
    return registry


def bench_processor(admin: KafkaConnection, n_events: int) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    ingress = [topics.ingress(prefix, a) for a in AGENCIES]
    bench_namespace(admin, prefix)
    try:
        return _bench_processor(admin, prefix, ingress, n_events)
    finally:
        delete_topics_with_prefix(admin, prefix)


def _bench_processor(admin: KafkaConnection, prefix: str, ingress: list[str],
                     n_events: int) -> dict[str, float]:
    correlator = admin.as_principal("correlator")
    # Event times must not be in the future for validation: the year ends before now.
    events = population(n_events, children=max(1000, n_events // 10))
    for agency in AGENCIES:  # each agency publishes its own events, as itself
        producer = make_producer(admin.as_principal(agency), "bench-correlation", linger_ms=20)
        send_all(producer, [(topics.ingress(prefix, e.agency_id),
                             e.subject.linkage_block.to_bytes(4, "big"), encode(e), None)
                            for e in events if e.agency_id == agency])
        producer.close()
    plain_rate = _read_all(correlator, ingress, n_events)

    with tempfile.TemporaryDirectory() as tmp:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_KAFKA_")}
        env = {**inherited, **correlator.env(),
               "SAFEHUB_TOPIC_PREFIX": prefix, "SAFEHUB_CORRELATOR_PARTITIONS": str(PARTITIONS),
               "SAFEHUB_CORRELATOR_DATA_DIR": tmp, "SAFEHUB_CORRELATOR_STATS_EVERY_S": "5"}
        log = Path(tmp) / "correlator.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "safehub.cli", "correlator"],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                first, last, alerts = _watch_audit(admin, topics.audit(prefix), n_events, proc,
                                                   log)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        # The worker's own account of where its time went (its periodic throughput lines).
        for line in log.read_text(errors="replace").splitlines():
            if "correlated " in line and " events in " in line:
                print(line, file=sys.stderr)
    rate = n_events / max((last - first) / 1000, 1e-3)
    return {
        "events": n_events,
        "alerts": alerts,
        "processor_events_per_s": int(rate),
        "plain_consumer_events_per_s": int(plain_rate),
        "ratio_processor_to_plain": round(rate / plain_rate, 4),
        "target_events_per_s": 5000,
        "meets_target": rate >= 5000,
    }


def _watch_audit(kafka: KafkaConnection, topic: str, n_events: int,
                 proc: subprocess.Popen[bytes], log: Path) -> tuple[int, int, int]:
    consumer = make_consumer(kafka, None, client_id="bench-audit")
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    accepted = alerts = 0
    first = last = 0
    deadline = time.monotonic() + 600
    while accepted < n_events:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"correlator stopped or too slow: {accepted}/{n_events}\n{tail}")
        for batch in consumer.poll(timeout_ms=500).values():
            for rec in batch:
                entry = decode(rec.value, AuditEntry)
                if entry.action == AuditAction.EVENT_ACCEPTED:
                    accepted += 1
                    first = first or rec.timestamp
                    last = rec.timestamp
                elif entry.action == AuditAction.ALERT_EMITTED:
                    alerts += 1
    consumer.close()
    return first, last, alerts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--core-events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="processor runs (median kept)")
    args = parser.parse_args()
    admin = KafkaConnection.from_env(ADMIN)
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {"core": bench_core(args.core_events)}
    print(json.dumps(results["core"], indent=2))
    # The machine is shared and noisy: the median of a few runs, with every run kept.
    runs = sorted((bench_processor(admin, args.events) for _ in range(args.runs)),
                  key=lambda r: r["processor_events_per_s"])
    results["processor"] = {
        **runs[len(runs) // 2],
        "processor_events_per_s_runs": [r["processor_events_per_s"] for r in runs],
        "batch_max": int(os.environ.get("SAFEHUB_CORRELATOR_BATCH", DEFAULT_BATCH)),
    }
    print(json.dumps(results["processor"], indent=2))
    results["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "note": "2 cores shared with other developers' tests; figures vary with their load",
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
