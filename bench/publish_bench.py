"""Agency publish throughput with the key service beside version 1's HMAC, in one run.

    python -m bench.publish_bench [--events N] [--rounds R]

On the secure cluster named by SAFEHUB_KAFKA_* (default: the local one). As its admin principal
it makes the run's ingress topic and the credentials and ACLs of the agency and of the
`keyservice` principal; then it starts `safehub keyservice serve` as a separate process over
HTTPS on 127.0.0.1 (fresh keys for epochs 0 and 1, a bearer secret for the agency, a
certificate from the launcher's local CA code), and the agency publishes as itself (SASL_SSL,
SCRAM-SHA-512) the same N records R times per path, the paths alternating (HMAC first in odd
rounds, the key service first in even ones), each time into a fresh vault. The key service path
is opened as `safehub publish` opens it (producers/keysource.py: the run's cache of outputs in
front of the client), afresh every round. Reported: the median events/s per path with the
range, every round, the agency process's CPU per event, and the key service's CPU (user +
system, from /proc) per element it evaluated (counted by the service itself, GET /v1/usage).

Publishing includes everything a real run does: normalisation, match keys and linkage blocks
(key service: blind, one HTTPS call per 1024 elements with two in flight, finalize, each input
once per run; HMAC: in-process), the vault's handle assignment (SQLite, WAL, synchronous=FULL,
committed before sending), contract validation, Avro encoding, and acks=all idempotent
delivery with a report per event. The records are one per child, every child distinct (the
worst case for the key service: four distinct match-key inputs per event, only the birth dates
repeat, where an agency's real export repeats children too).

Also measured (HMAC, no broker): pseudonymise + encode per event. Writes
bench/results/publish.json. Targets: at least 2,000 events/s with the key service (issue 19);
at least 5,000 events/s per agency process with HMAC (issue 4).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from safehub.bus import make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.access import apply
from safehub.deploy.kafka.launcher import free_port
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, Service, validate
from safehub.deploy.topics import TopicSpec, create_topics, delete_topics_with_prefix
from safehub.producers.keying import Keying, as_keying
from safehub.producers.keysource import KEYSERVICE_BATCH, KeyService, KeySource
from safehub.producers.pseudonymisation import prepare, prepare_many, to_event
from safehub.producers.publisher import DEFAULT_BATCH as PUBLISH_BATCH
from safehub.producers.publisher import DeliveryReport, Publisher
from safehub.producers.records import SignRecord
from safehub.producers.vault import Vault
from safehub.schemas import codec
from safehub.schemas.vocabulary import Sector
from safehub.services.keyservice import local
from tests.integration.test_publish import KEY, children, sign_records

RESULTS = Path(__file__).resolve().parent / "results"
AGENCY = "bench-agency"
TARGET_KEYSERVICE_EVENTS_PER_S = 2000
TARGET_HMAC_EVENTS_PER_S = 5000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Round:
    path: str
    events_per_s: float
    delivered: int
    agency_cpu_us_per_event: float
    elements: int = 0  # evaluated by the key service during the round
    service_cpu_us_per_element: float = 0.0


def _publish(admin: KafkaConnection, prefix: str, keying: Keying,
             records: list[SignRecord], tmp: Path, tag: str) -> tuple[float, int, float]:
    """(wall seconds, delivered, agency CPU seconds) for one publish of `records`."""
    vault = Vault.open(f"sqlite:///{tmp}/vault-{tag}.db")
    producer = make_producer(admin.as_principal(AGENCY), f"bench-publisher-{tag}")
    try:
        publisher = Publisher(producer, vault, keying, AGENCY, Sector.POLICE, prefix)
        cpu0, started = time.process_time(), time.perf_counter()
        outcomes = publisher.publish_many(records)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    finally:
        producer.close()
        vault.close()
    return wall, sum(isinstance(o, DeliveryReport) for o in outcomes), cpu


def _elements_used(service: local.LocalKeyService) -> int:
    rows = service.usage()["agencies"]
    return sum(int(r["day"]["used"]) for r in rows if r["agency"] == AGENCY)


def _summary(rounds: list[Round], path: str) -> dict[str, object]:
    mine = [r for r in rounds if r.path == path]
    rates = [r.events_per_s for r in mine]
    out: dict[str, object] = {
        "events_per_s_median": round(statistics.median(rates)),
        "events_per_s_range": [round(min(rates)), round(max(rates))],
        "agency_cpu_us_per_event_median": round(
            statistics.median(r.agency_cpu_us_per_event for r in mine), 1),
    }
    if path == "keyservice":
        out["service_cpu_us_per_element_median"] = round(
            statistics.median(r.service_cpu_us_per_element for r in mine), 1)
        out["elements_per_event"] = round(
            sum(r.elements for r in mine) / sum(r.delivered for r in mine), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    admin = KafkaConnection.from_env(ADMIN)
    kids = children(args.events, seed=99)
    load_at_start = round(os.getloadavg()[0], 2)

    records = sign_records(kids, "BENCH")
    started = time.perf_counter()
    for record in records:
        prepared = prepare(record, AGENCY, KEY)
        codec.encode(to_event(prepared, AGENCY, Sector.POLICE, KEY, "0" * 32))
    pure_s = time.perf_counter() - started

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    create_topics(admin, [TopicSpec(prefix + f"ingress.{AGENCY}", 6, 1, {})])
    apply(admin, Registry(validate((Party(AGENCY, Kind.AGENCY, Sector.POLICE),
                                    Party(Service.KEYSERVICE, Kind.SERVICE)),
                                   "publish bench")), prefix)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        service = local.prepare(Path(tmp) / "keyservice", [AGENCY], free_port(),
                                quota=(10**9, 10**12))
        env = {**os.environ, **admin.as_principal(Service.KEYSERVICE).env(),
               "SAFEHUB_TOPIC_PREFIX": prefix}
        source = KeySource(local.FIRST_MATCH_EPOCH, None, KeyService(
            service.url, service.secret_file(AGENCY), service.ca_file), {})
        with local.serving(service, env, Path(tmp) / "keyservice.log") as server:
            with service.client(AGENCY) as client:
                client.evaluate(1, [b"warm up"])  # imports, the server's first call
            hmac = as_keying(KEY)
            for n in range(args.rounds):
                order = ["hmac", "keyservice"] if n % 2 == 0 else ["keyservice", "hmac"]
                for path in order:
                    batch = sign_records(kids, f"B{n}{path[0]}")
                    if path == "hmac":
                        wall, delivered, cpu = _publish(admin, prefix, hmac, batch,
                                                        Path(tmp), f"{n}h")
                        rounds.append(Round(path, delivered / wall, delivered,
                                            cpu / len(batch) * 1e6))
                    else:
                        used0, server0 = _elements_used(service), _cpu_seconds(server.pid)
                        # As `safehub publish` opens it, afresh each round: no output is
                        # remembered from an earlier round.
                        oprf, close = source.open()
                        try:
                            wall, delivered, cpu = _publish(admin, prefix, oprf, batch,
                                                            Path(tmp), f"{n}k")
                        finally:
                            close()
                        server_cpu = _cpu_seconds(server.pid) - server0
                        elements = _elements_used(service) - used0
                        rounds.append(Round(path, delivered / wall, delivered,
                                            cpu / len(batch) * 1e6, elements,
                                            server_cpu / max(1, elements) * 1e6))
                    print(json.dumps(_round_doc(rounds[-1])), flush=True)
            # The key derivation alone (no vault, no broker), as the publisher batches it.
            oprf, close = source.open()
            try:
                started = time.perf_counter()
                for i in range(0, len(records), PUBLISH_BATCH):
                    prepare_many(records[i:i + PUBLISH_BATCH], AGENCY, oprf)
                derive_s = time.perf_counter() - started
            finally:
                close()
    delete_topics_with_prefix(admin, prefix)
    every = args.events * args.rounds
    keyservice, hmac_path = _summary(rounds, "keyservice"), _summary(rounds, "hmac")
    ks_rate, hmac_rate = keyservice["events_per_s_median"], hmac_path["events_per_s_median"]
    assert isinstance(ks_rate, int) and isinstance(hmac_rate, int)
    all_delivered = all(r.delivered == args.events for r in rounds)
    result = {
        "bench": "publish",
        "events": args.events,
        "rounds": args.rounds,
        "pseudonymise_encode_us_per_event": round(pure_s / args.events * 1e6, 1),
        "keyservice_derive_only_us_per_event": round(derive_s / args.events * 1e6, 1),
        "keyservice_keying": "as safehub publish opens it (producers/keysource.py): "
                             f"{KEYSERVICE_BATCH} inputs per PRF call into CachingPRF over "
                             "KeyServiceClient (1024 elements per HTTPS call, two in flight); "
                             "a fresh cache every round",
        "keyservice": keyservice,
        "hmac": hmac_path,
        "publish_events_per_s": ks_rate,
        "delivered": sum(r.delivered for r in rounds),
        "offered": every * 2,
        "every_round": [_round_doc(r) for r in rounds],
        "target_events_per_s": TARGET_KEYSERVICE_EVENTS_PER_S,
        "target_met": all_delivered and ks_rate >= TARGET_KEYSERVICE_EVENTS_PER_S,
        "hmac_target_events_per_s": TARGET_HMAC_EVENTS_PER_S,
        "hmac_target_met": all_delivered and hmac_rate >= TARGET_HMAC_EVENTS_PER_S,
        "transport": "SASL_SSL, SCRAM-SHA-512 (as the agency's own principal); key service "
                     "over HTTPS on 127.0.0.1, a separate process",
        "records": "one per child, every child distinct (four distinct match-key inputs per "
                   "event; blocks shared by children born the same day)",
        "cores": os.cpu_count(),
        "load_average_1min_at_start": load_at_start,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "publish.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["target_met"] else 1


def _round_doc(r: Round) -> dict[str, object]:
    doc: dict[str, object] = {"path": r.path, "events_per_s": round(r.events_per_s),
                              "agency_cpu_us_per_event": round(r.agency_cpu_us_per_event, 1)}
    if r.path == "keyservice":
        doc["elements"] = r.elements
        doc["service_cpu_us_per_element"] = round(r.service_cpu_us_per_element, 1)
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
