"""The auditor's shell around replay: read-only snapshots of topics and inbox databases.

Nothing here produces to a topic, joins a consumer group, commits an offset or writes to a
database: the only thing written is the auditor's own report file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence

from kafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from safehub.bus import make_consumer
from safehub.errors import BrokerError, StoreError, ValidationError
from safehub.schemas.codec import decode
from safehub.schemas.records import CorrelatedAlert, RoutedAlert
from safehub.services.audit.command import AuditSettings
from safehub.services.audit.ledger import open_engine
from safehub.services.audit.reading import Record, SnapshotReader, read_all, read_fast
from safehub.services.audit.replay import (
    Difference,
    ReplayReport,
    alert_fingerprint,
    check_delivered,
    choose_rules,
    compare,
    correlator_entries,
    fingerprint,
    replay_events,
    summary,
)
from safehub.services.correlation.rules import load_rules, rules_by_version


def topics_with_prefix(bootstrap: str, start: str) -> list[str]:
    consumer = make_consumer(bootstrap, None, client_id="safehub-auditor")
    try:
        return sorted(t for t in consumer.topics() if t.startswith(start))
    except KafkaError as exc:
        raise BrokerError(f"cannot list topics: {exc}") from exc
    finally:
        consumer.close(autocommit=False)


def read_ingress(bootstrap: str, topics: Sequence[str], from_ms: int | None,
                 show_progress: bool) -> tuple[dict[bytes, bytes], int]:
    """Every ingress record's bytes, indexed by SHA-256: the digest the correlator journals."""
    by_digest: dict[bytes, bytes] = {}
    plan = SnapshotReader(bootstrap, topics, from_ms=from_ms)
    total = plan.total
    plan.close()
    bar = tqdm(total=total, unit="ev", desc="reading ingress", disable=not show_progress,
               file=sys.stderr)

    def index(batch: list[Record]) -> None:
        for r in batch:
            if r.value is not None:
                by_digest[hashlib.sha256(r.value).digest()] = r.value
        bar.update(len(batch))

    try:
        count = read_fast(bootstrap, topics, index, from_ms=from_ms)
    finally:
        bar.close()
    return by_digest, count


def decode_alerts(records: Iterable[Record], journalled: set[bytes],
                  report: ReplayReport) -> list[CorrelatedAlert]:
    """The alerts on `correlated`; each must have the correlator's ALERT_EMITTED entry."""
    out = []
    for r in records:
        try:
            alert = decode(r.value, CorrelatedAlert)
        except ValidationError as exc:
            report.differences.append(Difference(
                "unexpected", f"record {r.partition}/{r.offset} on {r.topic} is not an alert "
                f"({exc.field}: {exc.rule})"))
            continue
        if hashlib.sha256(r.value or b"").digest() not in journalled:
            report.differences.append(Difference(
                "unjournalled", f"alert {alert.alert_id} on {r.topic} has no ALERT_EMITTED "
                "entry with its digest (altered, or not written by the correlator)",
                alert.alert_id, alert.cluster_id))
        out.append(alert)
    return out


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

    entries, journalled_alerts = correlator_entries(
        r.value or b"" for r in read_all(bootstrap, [prefix + "audit"]))
    emitted = decode_alerts(read_all(bootstrap, [prefix + "correlated"]), journalled_alerts,
                            report)
    by_digest, report.ingress_records = read_ingress(bootstrap, ingress_topics, args.from_ms,
                                                     show)
    if args.from_ms is not None:
        # A partial replay: only events read, and only alerts they can have raised.
        entries = [e for e in entries if e.digest in by_digest]
        emitted = [a for a in emitted if a.raised_at >= args.from_ms]
    journalled = {e.digest for e in entries}
    report.unaccounted_events = sum(1 for d in by_digest if d not in journalled)

    override = load_rules(args.rules) if args.rules else None
    rules_for = choose_rules(emitted, override, rules_by_version)
    report.rules_versions = sorted(
        {override.version} if override else {a.rules_version for a in emitted})
    bar = tqdm(total=len(entries), unit="ev", desc="replaying", disable=not show,
               file=sys.stderr)
    try:
        replayed = replay_events(entries, by_digest, rules_for, report, bar.update)
    finally:
        bar.close()
    compare(replayed, emitted, report, other_rules=override is not None)
    if override is None:
        routed_topics = topics_with_prefix(bootstrap, prefix + "alerts.")
        if routed_topics:
            check_delivered(replayed, routed_fingerprints(read_all(bootstrap, routed_topics),
                                                          report), "routed", report)
        for url in args.inbox_db:
            check_delivered(replayed, inbox_fingerprints(url), "inbox", report)

    print(summary(report, override is not None))
    args.report.write_text(json.dumps(report.as_dict(), indent=2))
    print(f"report written to {args.report}")
    return 0 if report.ok else 1
