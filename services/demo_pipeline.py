"""What `safehub demo` does against the running pipeline: topics, publishing, settling, summary.

Publishing goes through each simulated agency's real `Publisher` (normalisation, match keys and
blocks through the keyed PRF it is handed, vault, contract codec, acks=all), in the population's
arrival order. "Settled" means every
topic the pipeline reads has been consumed to its end by some consumer group and nothing new
has appeared for a while: the correlator has seen every event, the router every alert, the
inbox every notification, the audit sink every entry, the agencies' desk every
re-identification request and the hubs' inboxes every answer.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from safehub import topics
from safehub.bus import make_admin, make_consumer, make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.access import apply
from safehub.deploy.registry import Registry
from safehub.deploy.topics import broker_count, create_topics, load_specs
from safehub.errors import BrokerError, SafehubError
from safehub.producers.keying import Keying
from safehub.producers.pseudonymisation import event_id
from safehub.producers.publisher import DeliveryReport, Publisher, Rejected
from safehub.producers.simulation.export import publisher_record
from safehub.producers.simulation.trajectories import AgencyRecord, Population
from safehub.producers.vault import Vault
from safehub.schemas import codec
from safehub.schemas.records import CorrelatedAlert

log = logging.getLogger(__name__)
CHUNK = 500  # records per publishing round, in arrival order


def prepare_cluster(
    admin: KafkaConnection, registry: Registry, prefix: str, agencies: Iterable[str],
    timeout: float = 60.0,
) -> int:
    """The registry's principals and ACLs, the publishing agencies' ingress topics and every
    hub's topics. Returns the number of topics created, once a fresh client sees them all: a
    service that lists the ingress topics at start (the correlator) must not start before the
    broker's metadata has caught up.
    """
    outsiders = sorted(set(agencies) - set(registry.agencies))
    if outsiders:
        raise SafehubError(f"agencies not in the agency registry: {', '.join(outsiders)}; add "
                           "them to deploy/agencies.toml")
    apply(admin, registry, prefix)
    specs = load_specs(sorted(set(agencies)), broker_count(admin), prefix=prefix,
                       hubs=registry.hubs)
    created = create_topics(admin, specs)
    wanted = {s.name for s in specs}
    deadline = time.monotonic() + timeout
    while True:
        reader = make_consumer(admin, None, client_id="safehub-demo-topics")
        try:
            missing = wanted - reader.topics()
        except KafkaError as exc:
            raise BrokerError(f"cannot list topics: {exc}") from exc
        finally:
            reader.close()
        if not missing:
            return len(created)
        if time.monotonic() > deadline:
            raise BrokerError(f"{len(missing)} created topics are still not visible after "
                              f"{timeout:.0f}s, e.g. {sorted(missing)[0]}")
        time.sleep(0.5)


@dataclass(frozen=True, slots=True)
class Published:
    delivered: int
    rejected: int
    undelivered: int
    duplicates: int


def publish_population(
    pop: Population, kafka: KafkaConnection, prefix: str, keying: Callable[[str], Keying],
    vaults: Path, check: Callable[[], None],
) -> Published:
    """Every agency's records through its own publisher, as its own principal (which may write
    its own ingress topic and nothing else), in arrival order. `keying(agency)` is how that
    agency derives its match keys and blocks (the demo: through the key service, with its own
    bearer secret)."""
    vaults.mkdir(parents=True, exist_ok=True)
    sectors = {a.agency_id: a.sector for a in pop.world.agencies}
    producers: dict[str, KafkaProducer] = {}
    publishers: dict[str, Publisher] = {}
    counts: Counter[str] = Counter()
    try:
        for start in range(0, len(pop.records), CHUNK):
            check()
            chunk = pop.records[start:start + CHUNK]
            for agency_id, records in _by_agency(chunk):
                publisher = publishers.get(agency_id)
                if publisher is None:
                    vault = Vault.open(f"sqlite:///{vaults / (agency_id + '.sqlite')}")
                    producer = make_producer(kafka.as_principal(agency_id),
                                             f"safehub-demo-{agency_id}")
                    producers[agency_id] = producer
                    publisher = Publisher(producer, vault, keying(agency_id), agency_id,
                                          sectors[agency_id],
                                          topic_prefix=prefix)
                    publishers[agency_id] = publisher
                for outcome in publisher.publish_many(publisher_record(r) for r in records):
                    counts[type(outcome).__name__] += 1
    finally:
        for producer in producers.values():
            producer.close()
    distinct = len({(r.agency_id, r.record_ref) for r in pop.records})
    return Published(
        delivered=counts[DeliveryReport.__name__],
        rejected=counts[Rejected.__name__],
        undelivered=counts["Undelivered"],
        duplicates=len(pop.records) - distinct,
    )


def _by_agency(chunk: Sequence[AgencyRecord]) -> list[tuple[str, list[AgencyRecord]]]:
    groups: dict[str, list[AgencyRecord]] = {}
    for r in chunk:
        groups.setdefault(r.agency_id, []).append(r)
    return sorted(groups.items())


Positions = Mapping[str, Callable[[], int]]  # topic -> where a group-less reader has got to


def _watched(name: str, prefix: str, positions: Positions) -> bool:
    if name in positions:
        return True
    watched = (topics.Family.INGRESS, topics.Family.ALERTS, topics.Family.REID_REQUESTS,
               topics.Family.REID_RESPONSES, topics.Family.CORRELATED)
    return any(topics.in_family(name, f, prefix) for f in watched)


def audit_position(database_url: str) -> Callable[[], int]:
    """The audit sink keeps its place in its ledger, not in a consumer group: read it there."""
    from safehub.services.audit.ledger import Ledger, open_engine

    def position() -> int:
        engine = open_engine(database_url, read_only=True)
        try:
            return Ledger(engine).next_offset() or 0
        except SafehubError:
            return 0  # the sink has not created its ledger yet
        finally:
            engine.dispose()

    return position


def consumption(
    kafka: KafkaConnection, prefix: str, positions: Positions | None = None
) -> tuple[dict[str, int], list[str]]:
    """(end offset total per watched topic, the non-empty topics not yet read to the end).

    A topic counts as read when some consumer group has committed its end offsets, or, for a
    topic in `positions` (single-partition, read without a group), when that reader has got there.
    """
    positions = positions or {}
    admin = make_admin(kafka, "safehub-demo-admin")
    reader = make_consumer(kafka, None, client_id="safehub-demo-watch")
    try:
        topics = sorted(t for t in reader.topics() if _watched(t, prefix, positions))
        parts = [TopicPartition(t, p) for t in topics
                 for p in sorted(reader.partitions_for_topic(t) or ())]
        ends = reader.end_offsets(parts)
        groups = [g["group_id"] for g in admin.list_groups()]
        committed = admin.list_group_offsets(groups) if groups else {}
    except KafkaError as exc:
        raise BrokerError(f"cannot read consumer progress: {exc}") from exc
    finally:
        reader.close()
        admin.close()
    totals: Counter[str] = Counter()
    for tp, end in ends.items():
        totals[tp.topic] += end
    behind = []
    for topic in topics:
        if totals[topic] == 0:
            continue
        if topic in positions:
            tp = TopicPartition(topic, 0)
            at = positions[topic]()  # opens the reader's store: once per check
            if at < ends[tp] and at < record_end(kafka, tp, ends[tp]):
                behind.append(topic)
            continue
        topic_parts = [tp for tp in parts if tp.topic == topic]
        if not any(
            all((offsets.get(tp).offset if offsets.get(tp) else 0) >= ends[tp]
                for tp in topic_parts)
            for offsets in committed.values()
        ):
            behind.append(topic)
    return dict(totals), behind


def record_end(kafka: KafkaConnection, tp: TopicPartition, end: int) -> int:
    """The offset after the partition's last committed record, which is below `end` when the
    partition ends with a transaction marker (the correlator writes `audit` in transactions)."""
    reader = make_consumer(kafka, None, client_id="safehub-demo-watch")
    try:
        reader.assign([tp])
        window = 16
        # An open transaction holds committed readers below `end` until it ends: not settled.
        deadline = time.monotonic() + 5
        while True:
            start = max(0, end - window)
            reader.seek(tp, start)
            last = -1
            while reader.position(tp) < end:
                if time.monotonic() > deadline:
                    return end
                for record in reader.poll(timeout_ms=200).get(tp, []):
                    last = record.offset
            if last >= 0 or start == 0:
                return last + 1
            window *= 4
    except KafkaError as exc:
        raise BrokerError(f"cannot read the end of {tp.topic}: {exc}") from exc
    finally:
        reader.close()


def wait_settled(
    kafka: KafkaConnection, prefix: str, deadline: float, quiet_s: float, check: Callable[[], None],
    positions: Positions | None = None,
) -> list[str]:
    """Block until everything is consumed and quiet for `quiet_s`.

    Returns the topics still not read to the end at the deadline (empty when settled).
    """
    now, pause = time.monotonic, time.sleep
    last: dict[str, int] | None = None
    behind: list[str] = ["(not asked yet)"]
    quiet_since = now()
    while now() < deadline:
        check()
        try:
            totals, behind = consumption(kafka, prefix, positions)
        except BrokerError as exc:
            # A fresh broker loads its group coordinator lazily; ask again shortly.
            log.info("consumer progress not available yet: %s", exc)
            pause(1.0)
            continue
        if totals != last:
            last, quiet_since = totals, now()
        if not behind and now() - quiet_since >= quiet_s:
            return []
        pause(1.0)
    return behind


def read_alerts(kafka: KafkaConnection, topic: str) -> list[CorrelatedAlert]:
    """Every alert on `correlated`, read from the start without a consumer group."""
    consumer = make_consumer(kafka, None, client_id="safehub-demo-summary")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                          or ())]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        alerts: list[CorrelatedAlert] = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=1000).values():
                for rec in records:
                    alerts.append(codec.decode(rec.value, CorrelatedAlert))
        return alerts
    except KafkaError as exc:
        raise BrokerError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()


def summarise(
    kafka: KafkaConnection, prefix: str, inbox_url: str, pop: Population
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from safehub.consumers.inbox.database import make_engine
    from safehub.consumers.inbox.models import InboxAlert

    alerts = {a.alert_id: a for a in read_alerts(kafka, topics.correlated(prefix))}
    by_tier = Counter(a.tier.value for a in alerts.values())
    engine = make_engine(inbox_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(InboxAlert.agency_id, func.count()).group_by(InboxAlert.agency_id)
            ).all()
    finally:
        engine.dispose()
    inbox = {str(agency): int(n) for agency, n in rows}
    # Score against the ground truth, which never left this process.
    child_of = {event_id(agency, ref): child
                for (agency, ref), child in pop.truth.record_child.items()}
    alerted = {child_of[e.event_id] for a in alerts.values() if a.tier.rank >= 2
               for e in a.evidence if e.event_id in child_of}
    exploited = pop.truth.exploited
    return {
        "alerts": len(alerts),
        "alerts_by_tier": {t: by_tier[t] for t in ("EMERGING", "ESCALATING", "HIGH")
                           if by_tier[t]},
        "inbox_rows": sum(inbox.values()),
        "inbox_by_agency": dict(sorted(inbox.items())),
        "exploited_children": len(exploited),
        "exploited_children_alerted_escalating_or_high": len(alerted & exploited),
        "other_children_alerted_escalating_or_high": len(alerted - exploited),
    }
