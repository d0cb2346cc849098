"""The auditor's shell around replay: read-only snapshots of topics and inbox databases.

Nothing here produces to a topic, joins a consumer group, commits an offset or writes to a
database: the only thing written is the auditor's own report file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable

from kafka import TopicPartition
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from safehub import topics
from safehub.connection import KafkaConnection
from safehub.errors import BrokerError, ConfigError, StoreError, ValidationError
from safehub.schemas.codec import decode
from safehub.schemas.records import RoutedAlert
from safehub.services.audit.command import AuditSettings
from safehub.services.audit.ledger import open_engine
from safehub.services.audit.reading import (
    Fetched,
    Record,
    auditor_client,
    fetch,
    list_topics,
    plan_snapshot,
    read_all,
)
from safehub.services.audit.replay import (
    Difference,
    ReplayReport,
    alert_fingerprint,
    check_delivered,
    fingerprint,
    summary,
)
from safehub.services.audit.sharding import (
    ShardJob,
    combine,
    cyclic_gc_paused,
    run_shards,
    shard_count,
    split,
)
from safehub.services.correlation.rules import load_rules


def routed_fingerprints(records: Iterable[Record], report: ReplayReport
                        ) -> list[tuple[str, str]]:
    out = []
    for r in records:
        try:
            routed = decode(r.value, RoutedAlert)
        except ValidationError as exc:
            report.differences.append(Difference(
                "routed", f"record {r.partition}/{r.offset} on {r.topic} is not a routed alert "
                f"({exc.field}: {exc.rule})"))
            continue
        out.append((routed.alert.alert_id, alert_fingerprint(routed.alert)))
    return out


def inbox_fingerprints(url: str) -> list[tuple[str, str]]:
    """(alert id, fingerprint) of every inbox row, read with plain SELECTs on a read-only
    connection."""
    engine = open_engine(url, read_only=True)
    try:
        with engine.connect() as conn:
            evidence: dict[str, list[str]] = defaultdict(list)
            for nid, event_id in conn.execute(
                    text("SELECT notification_id, event_id FROM inbox_evidence")):
                evidence[nid].append(event_id)
            rows = conn.execute(text(
                "SELECT notification_id, alert_id, rules_version, cluster_id, tier, rule, score "
                "FROM inbox_alert")).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the inbox database: {type(exc).__name__}") from exc
    finally:
        engine.dispose()
    return [(r[1], fingerprint(r[1], r[2], r[3], r[4], r[5], float(r[6]), evidence[r[0]]))
            for r in rows]


def read_snapshot(kafka: KafkaConnection, bounds: dict[TopicPartition, tuple[int, int]],
                  audit_topic: str, correlated_topic: str, show_progress: bool
                  ) -> tuple[list[bytes], list[tuple[str, bytes | None]],
                             dict[bytes, tuple[bytes, bytes | None]], int]:
    """The journal's entries, the alerts on `correlated` as (where, value), and every ingress
    record's (value, key) by the SHA-256 of its value (the digest the correlator journals),
    with the number of ingress records read: everything in `bounds` (the other topics are
    ingress)."""
    audit: list[bytes] = []
    alerts: list[tuple[str, bytes | None]] = []
    by_digest: dict[bytes, tuple[bytes, bytes | None]] = {}
    ingress_records = 0
    bar = tqdm(total=sum(max(0, end - start) for start, end in bounds.values()), unit="rec",
               desc="reading topics", disable=not show_progress, file=sys.stderr)

    def collect(batch: list[Fetched]) -> None:
        nonlocal ingress_records
        for r in batch:
            if r.topic == audit_topic:
                audit.append(r.value or b"")
            elif r.topic == correlated_topic:
                alerts.append((f"{r.partition}/{r.offset} on {r.topic}", r.value))
            else:
                ingress_records += 1
                if r.value is not None:
                    by_digest[hashlib.sha256(r.value).digest()] = (r.value, r.key)
        bar.update(len(batch))

    try:
        fetch(kafka, bounds, collect)
    finally:
        bar.close()
    return audit, alerts, by_digest, ingress_records


def run_replay(args: argparse.Namespace, settings: AuditSettings) -> int:
    kafka = settings.kafka
    prefix = settings.prefix
    show = not args.no_progress
    report = ReplayReport()
    workers = args.workers or os.cpu_count() or 1
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    # Loaded here so that a bad file is reported before anything is read (the shards load it
    # again, from the same path).
    override = load_rules(args.rules) if args.rules else None
    audit_topic, correlated_topic = topics.audit(prefix), topics.correlated(prefix)
    with auditor_client(kafka) as consumer:
        found = list_topics(consumer)
        ingress_topics = ([topics.ingress(prefix, a) for a in args.agency] if args.agency
                          else sorted(t for t in found
                                      if topics.in_family(t, topics.Family.INGRESS, prefix)))
        routed_topics = sorted(t for t in found
                               if topics.in_family(t, topics.Family.ALERTS, prefix))
        if not ingress_topics:
            raise BrokerError(f"no {prefix}{topics.Family.INGRESS.stem}* topics to replay")
        # The journal's end offsets are taken first: every event it names was on ingress
        # before it was journalled, so a live system cannot make the ingress snapshot miss one.
        bounds = plan_snapshot(consumer, [([audit_topic], None), ([correlated_topic], None),
                                          (ingress_topics, args.from_ms)])
    # No tqdm monitor thread: run_shards forks its processes only while no other thread runs.
    tqdm.monitor_interval = 0
    with cyclic_gc_paused():
        audit, alerts, by_digest, report.ingress_records = read_snapshot(
            kafka, bounds, audit_topic, correlated_topic, show)
        shards = split(audit, alerts, by_digest, shard_count(len(by_digest), workers),
                       args.from_ms, report)
        if shards.fallback_version is None and override is None:
            raise ConfigError("no alert on `correlated` names a rules version: pass --rules")
        jobs = [ShardJob(shard, args.rules, shards.fallback_version or "", args.from_ms)
                for shard in shards.shards]
        bar = tqdm(total=sum(len(j.shard.entries) for j in jobs), unit="ev", desc="replaying",
                   disable=not show, file=sys.stderr)
        try:
            outcomes = run_shards(jobs, workers, bar.update)
        finally:
            bar.close()

    fingerprints = combine(report, outcomes, len(by_digest),
                           override.version if override else None)
    if override is None:
        if routed_topics:
            check_delivered(fingerprints, routed_fingerprints(read_all(kafka, routed_topics),
                                                              report), "routed", report)
        for url in args.inbox_db:
            check_delivered(fingerprints, inbox_fingerprints(url), "inbox", report)

    print(summary(report, override is not None))
    args.report.write_text(json.dumps(report.as_dict(), indent=2))
    print(f"report written to {args.report}")
    return 0 if report.ok else 1
