"""End-to-end latency: an event's publish -> its alert's row in the lead agency's hub inbox.

    python -m bench.latency_bench [--children N] [--rate R]

On the secure cluster named by SAFEHUB_KAFKA_BOOTSTRAP / SAFEHUB_KAFKA_SECRETS /
SAFEHUB_KAFKA_CA_FILE (default: the local one, `safehub kafka up`), as its admin principal.
Runs the real services as the demo does (`safehub correlator`, `safehub router`, `safehub
inbox`, separate processes, each as its own principal) on fresh prefixed topics with their
ACLs, then publishes through three agencies' real Publishers (each as that agency) at a paced
rate (default 1,000 events/s), their keys derived by the key service (`safehub keyservice
serve`, as the demo runs it: fresh keys, each agency with its own bearer secret, keyings opened
as `safehub publish` opens them). Each child gets three signs from three
agencies, so each child raises two alerts (emerging at the second sign, high at the third).
For every alert, latency = the inbox row's received_at (the inbox's clock, just before its
commit) - the wall-clock moment the publisher was called for the newest event in the alert's
evidence. Same machine, same clock. Writes bench/results/latency.json: the run with the median
p99 of `--runs` whole runs (default 3), with every run's p50 and p99; target p99 < 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kafka import TopicPartition

from safehub import topics
from safehub.bus import make_consumer, make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.access import apply
from safehub.deploy.kafka.launcher import free_port
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, Service, validate
from safehub.deploy.topics import create_topics, delete_topics_with_prefix, registry_specs
from safehub.producers.keysource import KeyService, KeySource
from safehub.producers.publisher import DeliveryReport, Publisher
from safehub.producers.records import SignRecord
from safehub.producers.vault import Vault
from safehub.samples.children import children
from safehub.schemas.codec import decode
from safehub.schemas.records import CorrelatedAlert, RoutedAlert
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.keyservice import local
from safehub.services.router.table import load_routing_table

RESULTS = Path(__file__).resolve().parent / "results"
AGENCIES = (("police-bench", Sector.POLICE, Sign.MISSING_FROM_HOME_OR_CARE),
            ("school-bench", Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL),
            ("health-bench", Sector.HEALTH, Sign.SELF_HARM))
LEEDS = "E08000035"
TARGET_P99_MS = 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_registry() -> Registry:
    """The bench's agencies, every receiver of the routing table (the router needs all their
    topics) and the services."""
    parties = [Party(a, Kind.AGENCY, sector) for a, sector, _ in AGENCIES]
    parties += [Party(h, Kind.HUB) for h in sorted(load_routing_table().receivers())]
    parties += [Party(s.value, Kind.SERVICE) for s in Service]
    parties.append(Party("auditor", Kind.AUDITOR))
    return Registry(validate(parties, "latency bench registry"))


def service_env(admin: KafkaConnection, principal: str, prefix: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_KAFKA_")},
            **admin.as_principal(principal).env(), "SAFEHUB_TOPIC_PREFIX": prefix}


def topic_times(kafka: KafkaConnection, topic: str) -> dict[str, int]:
    """alert id -> the record's timestamp (CreateTime: the producing process's wall clock)."""
    consumer = make_consumer(kafka, None, client_id="bench-reader", consumer_timeout_ms=3000)
    parts = [TopicPartition(topic, i) for i in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: dict[str, int] = {}
    for rec in consumer:
        record = decode(rec.value)
        alert = record.alert if isinstance(record, RoutedAlert) else record
        if isinstance(alert, CorrelatedAlert):
            out.setdefault(alert.alert_id, rec.timestamp)
    consumer.close()
    return out


def stage(values: list[int]) -> dict[str, int | None]:
    return {"p50_ms": percentile(values, 0.5) if values else None,
            "p99_ms": percentile(values, 0.99) if values else None}


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=4000)
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--warmup", type=int, default=20, help="children before measuring")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the services' logs and databases (the folder is printed)")
    parser.add_argument("--runs", type=int, default=3, help="whole runs (the median is kept)")
    args = parser.parse_args()
    # The machine is shared and noisy (p99 varied 0.4-2.1 s between runs of the same code):
    # the run with the median p99 is kept, and every run's figures with it.
    runs = sorted((run_once(args) for _ in range(args.runs)),
                  key=lambda r: math.inf if r["p99_ms"] is None else r["p99_ms"])
    result = {
        **runs[len(runs) // 2],
        "runs": len(runs),
        "p50_ms_runs": [r["p50_ms"] for r in runs],
        "p99_ms_runs": [r["p99_ms"] for r in runs],
        "runs_meeting_target": sum(bool(r["target_met"]) for r in runs),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["target_met"] else 1


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    """One whole run: fresh topics and services, warm-up, then the measured rounds."""
    admin = KafkaConnection.from_env(ADMIN)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    registry = bench_registry()
    # As the admin: the topics (one replica, as before: the figures stay comparable) and ACLs.
    specs = registry_specs(registry, 1, prefix)
    create_topics(admin, specs)
    apply(admin, registry, prefix)
    tmp = Path(tempfile.mkdtemp(prefix="safehub-latency-"))
    inbox_url = f"sqlite:///{tmp / 'inbox.db'}"
    cmd = (shutil.which("safehub") or f"{sys.executable} -m safehub.cli").split()
    procs = [
        start([*cmd, "router"], {**service_env(admin, "router", prefix),
                                 "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{tmp / 'router.db'}"},
              tmp / "router.log"),
        start([*cmd, "inbox"], {**service_env(admin, "csc-leeds", prefix),
                                "SAFEHUB_INBOX_AGENCIES": "csc-leeds",
                                "SAFEHUB_INBOX_DATABASE_URL": inbox_url}, tmp / "inbox.log"),
        start([*cmd, "correlator"], {**service_env(admin, "correlator", prefix),
                                     "SAFEHUB_CORRELATOR_DATA_DIR": str(tmp / "correlator")},
              tmp / "correlator.log"),
    ]
    kids = children(args.warmup + args.children, seed=7)
    stack = contextlib.ExitStack()
    keyservice = local.prepare(tmp / "keyservice", [a for a, _, _ in AGENCIES], free_port(),
                               quota=(10**9, 10**12))
    stack.enter_context(local.serving(keyservice, service_env(admin, Service.KEYSERVICE, prefix),
                                      tmp / "keyservice.log"))
    keyings = []
    for agency, _, _ in AGENCIES:
        keying, close = KeySource(local.FIRST_MATCH_EPOCH, None, KeyService(
            keyservice.url, keyservice.secret_file(agency), keyservice.ca_file), {}).open()
        stack.callback(close)
        keyings.append(keying)
    # Each agency publishes as itself: it may write only its own ingress topic.
    producers = [make_producer(admin.as_principal(a), f"bench-latency-{a}")
                 for a, _, _ in AGENCIES]
    publishers = [Publisher(producer, Vault.open(f"sqlite:///{tmp / f'vault-{a}.db'}"), keying,
                            a, sector, prefix)
                  for producer, keying, (a, sector, _) in zip(producers, keyings, AGENCIES,
                                                              strict=True)]
    published: dict[str, int] = {}
    base = now_ms() - 86_400_000

    def publish_round(kid_range: range, round_no: int, rate: int) -> None:
        agency, _, sign = AGENCIES[round_no]
        # 200 ms slices: a slice's keys come from the key service in two round trips (the
        # linkage blocks, then the match keys), about 100 ms for 200 events; 50 ms slices of 50
        # events each paid the same round trips and reached only ~350 events/s.
        step = max(1, rate // 5)
        ids = list(kid_range)
        t0 = time.monotonic()
        for i in range(0, len(ids), step):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            records = [SignRecord(record_ref=f"{agency}-{k:07d}", identity=kids[k],
                                  local_authority=LEEDS, occurred_at=base + round_no * 1000 + k,
                                  indicator=sign) for k in ids[i:i + step]]
            called = now_ms()
            for outcome in publishers[round_no].publish_many(records):
                if isinstance(outcome, DeliveryReport):
                    published[outcome.event_id] = called

    engine = sa.create_engine(inbox_url)

    def rows() -> list[tuple[str, int, str]]:
        query = sa.text("SELECT a.alert_id, a.received_at, e.event_id FROM inbox_alert a "
                        "JOIN inbox_evidence e ON e.notification_id = a.notification_id")
        try:
            with engine.connect() as conn:
                return [(r[0], r[1], r[2]) for r in conn.execute(query)]
        except sa.exc.OperationalError:
            return []  # the inbox has not created its tables yet

    def alert_count() -> int:
        return len({r[0] for r in rows()})

    try:
        # Warm-up: wait until the pipeline delivers end to end, so start-up is not measured.
        warm = range(0, args.warmup)
        for r in range(3):
            publish_round(warm, r, 200)
        deadline = time.monotonic() + 180
        while alert_count() < 2 * args.warmup:
            if time.monotonic() > deadline:
                raise SystemExit(f"pipeline did not warm up; logs in {tmp}")
            time.sleep(1)
        measured_from = len(published)
        measured = range(args.warmup, args.warmup + args.children)
        started = time.monotonic()
        for r in range(3):
            publish_round(measured, r, args.rate)
        publish_s = time.monotonic() - started
        expected = 2 * (args.warmup + args.children)
        deadline = time.monotonic() + 120
        while alert_count() < expected and time.monotonic() < deadline:
            time.sleep(1)
        by_alert: dict[str, tuple[int, list[str]]] = {}
        for alert_id, received, event_id in rows():
            by_alert.setdefault(alert_id, (received, []))[1].append(event_id)
        warm_events = set(list(published)[:measured_from])
        latencies: list[int] = []
        hops: dict[str, list[int]] = {"correlator": [], "router": [], "inbox": []}
        correlated = topic_times(admin, topics.correlated(prefix))
        routed = topic_times(admin, topics.alerts(prefix, "csc-leeds"))
        for alert_id, (received, events) in by_alert.items():
            if set(events) & warm_events or not all(e in published for e in events):
                continue
            newest = max(published[e] for e in events)
            latencies.append(received - newest)
            if alert_id in correlated and alert_id in routed:
                hops["correlator"].append(correlated[alert_id] - newest)
                hops["router"].append(routed[alert_id] - correlated[alert_id])
                hops["inbox"].append(received - routed[alert_id])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for producer in producers:
            producer.close()
        for p in publishers:
            p.vault.close()
        stack.close()
        delete_topics_with_prefix(admin, prefix)
    result: dict[str, Any] = {
        "bench": "latency: event publish -> alert row in the hub inbox",
        "events_published": 3 * args.children,
        "target_rate_events_per_s": args.rate,
        "achieved_rate_events_per_s": round(3 * args.children / publish_s),
        "alerts_measured": len(latencies),
        "alerts_expected": 2 * args.children,
        "p50_ms": percentile(latencies, 0.50) if latencies else None,
        "p99_ms": percentile(latencies, 0.99) if latencies else None,
        "max_ms": max(latencies) if latencies else None,
        "by_stage": {name: stage(values) for name, values in hops.items()},
        "stage_note": "hops from Kafka record CreateTime: publish call -> correlated record, "
                      "correlated -> alerts.<agency> record, alerts record -> inbox row",
        "target_p99_ms": TARGET_P99_MS,
        "target_met": bool(latencies) and percentile(latencies, 0.99) < TARGET_P99_MS
        and len(latencies) == 2 * args.children,
        "pipeline": "publisher (keys from the key service over HTTPS) -> correlator -> router "
                    "-> inbox (SQLite, WAL, synchronous=FULL)",
        "transport": "SASL_SSL (SCRAM-SHA-512 over TLS), ACLs; every service as its own principal",
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.keep_logs:
        print(f"services' logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
