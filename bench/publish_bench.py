"""Agency-side cost: pseudonymise + encode per event, and publish throughput to a local broker.

    python -m bench.publish_bench [--events N]

on the secure cluster named by SAFEHUB_KAFKA_* (default: the local one): as its admin
principal it makes the run's ingress topic and the agency's credentials and ACL, then the agency
publishes as itself (SASL_SSL, SCRAM-SHA-512), as `safehub publish` does.

Writes bench/results/publish.json. Target (issue 4): at least 5,000 events/s per agency process.
Publishing includes everything a real run does: normalisation, match keys, the vault's handle
assignment (SQLite, WAL, synchronous=FULL, committed before sending), contract validation, Avro
encoding, and acks=all idempotent delivery with a report per event.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from safehub.bus import make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.access import apply
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, validate
from safehub.deploy.topics import TopicSpec, create_topics, delete_topics_with_prefix
from safehub.producers.pseudonymisation import prepare, to_event
from safehub.producers.publisher import DeliveryReport, Publisher
from safehub.producers.vault import Vault
from safehub.schemas import codec
from safehub.schemas.vocabulary import Sector
from tests.integration.test_publish import KEY, children, sign_records

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_EVENTS_PER_S = 5000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    admin = KafkaConnection.from_env(ADMIN)
    records = sign_records(children(args.events, seed=99), "BENCH")

    started = time.perf_counter()
    for record in records:
        prepared = prepare(record, "bench-agency", KEY)
        codec.encode(to_event(prepared, "bench-agency", Sector.POLICE, KEY, "0" * 32))
    pure_s = time.perf_counter() - started

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topic = prefix + "ingress.bench-agency"
    create_topics(admin, [TopicSpec(topic, 6, 1, {})])
    apply(admin, Registry(validate((Party("bench-agency", Kind.AGENCY, Sector.POLICE),),
                                   "publish bench")), prefix)
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault.open(f"sqlite:///{tmp}/vault.db")
        producer = make_producer(admin.as_principal("bench-agency"), "bench-publisher")
        try:
            publisher = Publisher(producer, vault, KEY, "bench-agency", Sector.POLICE, prefix)
            started = time.perf_counter()
            outcomes = publisher.publish_many(records)
            publish_s = time.perf_counter() - started
        finally:
            producer.close()
            vault.close()
    delete_topics_with_prefix(admin, prefix)
    delivered = sum(isinstance(o, DeliveryReport) for o in outcomes)
    result = {
        "bench": "publish",
        "events": args.events,
        "pseudonymise_encode_us_per_event": round(pure_s / args.events * 1e6, 1),
        "publish_events_per_s": round(delivered / publish_s),
        "delivered": delivered,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "target_met": delivered == args.events and delivered / publish_s >= TARGET_EVENTS_PER_S,
        "transport": "SASL_SSL, SCRAM-SHA-512 (as the agency's own principal)",
        "cores": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "publish.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
