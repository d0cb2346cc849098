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
from collections.abc import Iterable, Sequence

from kafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from safehub.bus import make_consumer
from safehub.errors import BrokerError, ConfigError, StoreError, ValidationError
from safehub.schemas.codec import decode
from safehub.schemas.records import RoutedAlert
from safehub.services.audit.command import AuditSettings
from safehub.services.audit.ledger import open_engine
from safehub.services.audit.reading import Fetched, Record, SnapshotReader, read_all, read_fast
from safehub.services.audit.replay import (
    Difference,
    ReplayReport,
    alert_fingerprint,
    check_delivered,
    fingerprint,
    summary,
)
from safehub.services.audit.sharding import ShardJob, ShardPool, combine, shard_count, split
from safehub.services.correlation.rules import load_rules


def topics_with_prefix(bootstrap: str, start: str) -> list[str]:
    consumer = make_consumer(bootstrap, None, client_id="safehub-auditor")
    try:
        return sorted(t for t in consumer.topics() if t.startswith(start))
    except KafkaError as exc:
        raise BrokerError(f"cannot list topics: {exc}") from exc
    finally:
        consumer.close(autocommit=False)


def read_ingress(bootstrap: str, topics: Sequence[str], from_ms: int | None,
                 show_progress: bool) -> tuple[dict[bytes, tuple[bytes, bytes | None]], int]:
    """Every ingress record's (value, key), indexed by the SHA-256 of its value: the digest the
    correlator journals."""
    by_digest: dict[bytes, tuple[bytes, bytes | None]] = {}
    plan = SnapshotReader(bootstrap, topics, from_ms=from_ms)
    total = plan.total
    plan.close()
    bar = tqdm(total=total, unit="ev", desc="reading ingress", disable=not show_progress,
               file=sys.stderr)

    def index(batch: list[Fetched]) -> None:
        for r in batch:
            if r.value is not None:
                by_digest[hashlib.sha256(r.value).digest()] = (r.value, r.key)
        bar.update(len(batch))

    try:
        count = read_fast(bootstrap, topics, index, from_ms=from_ms)
    finally:
        bar.close()
    return by_digest, count


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


def run_replay(args: argparse.Namespace, settings: AuditSettings) -> int:
    bootstrap = settings.bootstrap
    prefix = settings.prefix
    show = not args.no_progress
    report = ReplayReport()
    ingress_topics = (
        [f"{prefix}ingress.{a}" for a in args.agency] if args.agency
        else topics_with_prefix(bootstrap, prefix + "ingress.")
    )
    if not ingress_topics:
        raise BrokerError(f"no {prefix}ingress.* topics to replay")
    workers = args.workers or os.cpu_count() or 1
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    # Loaded here so that a bad file is reported before anything is read (the shards load it
    # again, from the same path).
    override = load_rules(args.rules) if args.rules else None
    pool = ShardPool(workers)
    try:
        # The journal is read first: every event it names was on ingress before it was
        # journalled, so a live system cannot make a later snapshot of ingress miss one.
        audit: list[bytes] = []
        read_fast(bootstrap, [prefix + "audit"],
                  lambda batch: audit.extend(r.value or b"" for r in batch))
        alerts: list[tuple[str, bytes | None]] = []
        read_fast(bootstrap, [prefix + "correlated"], lambda batch: alerts.extend(
            (f"{r.partition}/{r.offset} on {r.topic}", r.value) for r in batch))
        by_digest, report.ingress_records = read_ingress(bootstrap, ingress_topics,
                                                         args.from_ms, show)
        shards = split(audit, alerts, by_digest, shard_count(len(by_digest), workers),
                       args.from_ms, report)
        if shards.fallback_version is None and override is None:
            raise ConfigError("no alert on `correlated` names a rules version: pass --rules")
        jobs = [ShardJob(shard, args.rules, shards.fallback_version or "", args.from_ms)
                for shard in shards.shards]
        bar = tqdm(total=sum(len(j.shard.entries) for j in jobs), unit="ev", desc="replaying",
                   disable=not show, file=sys.stderr)
        try:
            outcomes = pool.run(jobs, bar.update)
        finally:
            bar.close()
    finally:
        pool.close()

    fingerprints = combine(report, outcomes, len(by_digest),
                           override.version if override else None)
    if override is None:
        routed_topics = topics_with_prefix(bootstrap, prefix + "alerts.")
        if routed_topics:
            check_delivered(fingerprints, routed_fingerprints(read_all(bootstrap, routed_topics),
                                                              report), "routed", report)
        for url in args.inbox_db:
            check_delivered(fingerprints, inbox_fingerprints(url), "inbox", report)

    print(summary(report, override is not None))
    args.report.write_text(json.dumps(report.as_dict(), indent=2))
    print(f"report written to {args.report}")
    return 0 if report.ok else 1
