"""Agency publish throughput with the key service beside version 1's HMAC, in one run, for two
kinds of export.

    python -m bench.publish_bench [--events N] [--children C] [--months M] [--rounds R]

On the secure cluster named by SAFEHUB_KAFKA_* (default: the local one). As its admin principal
it makes the run's ingress topics and the credentials and ACLs of every agency and of the
`keyservice` principal; then it starts `safehub keyservice serve` as a separate process over
HTTPS on 127.0.0.1 (fresh keys for epochs 0 and 1, a bearer secret per agency, a certificate
from the launcher's local CA code), and the agencies publish as themselves (SASL_SSL,
SCRAM-SHA-512). Two scenarios, both in every round, each path (HMAC, key service) once per
scenario and round, the paths alternating (HMAC first in odd rounds, the key service first in
even ones), each time into fresh vaults:

- `distinct_children`: one agency publishes N records, one per child, every child distinct:
  the worst case for the key service (every match-key input distinct, only the birth
  dates repeat).
- `population`: the simulated population's records (`safehub.producers.simulation`, as the demo
  and the detection bench make it: C children over M months, the demo's five authorities),
  each agency's records in arrival order through its own publisher as its own principal, with
  its own keying opened as `safehub publish` opens it, one agency after another (as separate
  agency processes would, on this one machine). A real export repeats children (one child,
  several records) and birth dates, which the run's cache of outputs does not send again.

The key service path is opened as `safehub publish` opens it (producers/keysource.py: the run's
cache of outputs in front of the client), afresh for every agency and every round, so no round
reuses another's outputs. Each export is published as its own run would: a new producer, vault
and keying; timed is the publisher's `publish_many` (the producer is made and the vault opened
before the clock starts; the producer's first send, inside, fetches metadata and a producer
id). A round's rate is its events over the sum of its exports' publish times. Reported per
scenario and path: the median events/s with the range, every round, the agency's CPU per event
(its process and the key service client's worker processes); for the key service, elements per
event (counted by the service itself, GET /v1/usage) and the service's CPU (user + system, from
/proc) per element.

Publishing includes everything a real run does: normalisation, match keys and linkage blocks
(key service: blind, one HTTPS call per 512 elements, finalize, in the client's worker
processes, each input once per run; HMAC: in-process), the vault's handle assignment (SQLite,
WAL, synchronous=FULL, committed before sending), contract validation, Avro encoding, and
acks=all idempotent delivery with a report per event.

Also measured (HMAC, no broker): pseudonymise + encode per event; the key service's derivation
alone for the distinct children. Writes bench/results/publish.json. Targets: at least 2,000
events/s with the key service (issue 19); at least 5,000 events/s per agency process with HMAC
(issue 4). Exit code 0 when every record of every round was delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from safehub import topics
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
from safehub.producers.records import AgencyRecord
from safehub.producers.simulation.export import by_agency, publisher_record
from safehub.producers.simulation.trajectories import simulate
from safehub.producers.vault import Vault
from safehub.samples.children import KEY, children, sign_records
from safehub.schemas import codec
from safehub.schemas.vocabulary import Sector
from safehub.services.keyservice import local, workers

RESULTS = Path(__file__).resolve().parent / "results"
AGENCY = "bench-agency"
DISTINCT, POPULATION = "distinct_children", "population"
AUTHORITIES = 5  # the demo's
TARGET_KEYSERVICE_EVENTS_PER_S = 2000
TARGET_HMAC_EVENTS_PER_S = 5000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _agency_cpu_seconds() -> float:
    """This process and the key service client's worker processes, which blind and finalize
    for it (services/keyservice/workers.py)."""
    return time.process_time() + sum(_cpu_seconds(pid) for pid in workers.pids())


@dataclass(frozen=True, slots=True)
class Export:
    """One agency's records in one scenario, with what it publishes as."""

    agency: str
    sector: Sector
    records: Sequence[AgencyRecord]


@dataclass(frozen=True, slots=True)
class Round:
    scenario: str
    path: str
    events_per_s: float
    offered: int
    delivered: int
    agency_cpu_us_per_event: float
    elements: int = 0  # evaluated by the key service during the round
    service_cpu_us_per_element: float = 0.0


@dataclass
class Bench:
    admin: KafkaConnection
    prefix: str
    tmp: Path
    service: local.LocalKeyService
    server_pid: int

    def keying(self, agency: str) -> tuple[Keying, Callable[[], None]]:
        """As `safehub publish` opens it for this agency: a fresh cache of outputs."""
        return KeySource(local.FIRST_MATCH_EPOCH, None, KeyService(
            self.service.url, self.service.secret_file(agency), self.service.ca_file), {}).open()

    def elements_used(self, agencies: set[str]) -> int:
        rows = self.service.usage()["agencies"]
        return sum(int(r["day"]["used"]) for r in rows if r["agency"] in agencies)

    def run(self, scenario: str, path: str, exports: Sequence[Export], tag: str) -> Round:
        """Every export through its agency's publisher, one after another; only publish_many
        is timed."""
        agencies = {e.agency for e in exports}
        used0, server0 = self.elements_used(agencies), _cpu_seconds(self.server_pid)
        wall = cpu = 0.0
        delivered = 0
        for export in exports:
            # Each export as its own run: a new producer (made before the clock starts; its
            # first send, inside, fetches metadata and a producer id), vault and keying.
            producer = make_producer(self.admin.as_principal(export.agency),
                                     f"bench-publisher-{tag}-{export.agency}")
            vault = Vault.open(f"sqlite:///{self.tmp}/vault-{tag}-{export.agency}.db")
            keying, close = (as_keying(KEY), _nothing) if path == "hmac" \
                else self.keying(export.agency)
            try:
                publisher = Publisher(producer, vault, keying, export.agency, export.sector,
                                      self.prefix)
                cpu0, started = _agency_cpu_seconds(), time.perf_counter()
                outcomes = publisher.publish_many(export.records)
                wall += time.perf_counter() - started
                cpu += _agency_cpu_seconds() - cpu0
            finally:
                close()
                vault.close()
                producer.close()
            delivered += sum(isinstance(o, DeliveryReport) for o in outcomes)
        offered = sum(len(e.records) for e in exports)
        elements = server_cpu = 0.0
        if path == "keyservice":
            server_cpu = _cpu_seconds(self.server_pid) - server0
            elements = self.elements_used(agencies) - used0
        return Round(scenario, path, delivered / wall, offered, delivered, cpu / offered * 1e6,
                     int(elements), server_cpu / max(1, elements) * 1e6)


def _nothing() -> None:
    pass


def _summary(rounds: list[Round], scenario: str, path: str) -> dict[str, object]:
    mine = [r for r in rounds if r.scenario == scenario and r.path == path]
    rates = [r.events_per_s for r in mine]
    out: dict[str, object] = {
        "events_per_s_median": round(statistics.median(rates)),
        "events_per_s_range": [round(min(rates)), round(max(rates))],
        "agency_cpu_us_per_event_median": round(
            statistics.median(r.agency_cpu_us_per_event for r in mine), 1),
        "agency_cpu_us_per_event_range": [round(min(r.agency_cpu_us_per_event for r in mine), 1),
                                          round(max(r.agency_cpu_us_per_event for r in mine), 1)],
    }
    if path == "keyservice":
        per_element = [r.service_cpu_us_per_element for r in mine]
        out["elements_per_event"] = round(
            sum(r.elements for r in mine) / sum(r.delivered for r in mine), 2)
        out["service_cpu_us_per_element_median"] = round(statistics.median(per_element), 1)
        out["service_cpu_us_per_element_range"] = [round(min(per_element), 1),
                                                   round(max(per_element), 1)]
    return out


def _scenario_doc(rounds: list[Round], scenario: str, about: dict[str, object]
                  ) -> dict[str, object]:
    keyservice, hmac_path = (_summary(rounds, scenario, "keyservice"),
                             _summary(rounds, scenario, "hmac"))
    ks_rate, hmac_rate = keyservice["events_per_s_median"], hmac_path["events_per_s_median"]
    assert isinstance(ks_rate, int) and isinstance(hmac_rate, int)
    mine = [r for r in rounds if r.scenario == scenario]
    all_delivered = all(r.delivered == r.offered for r in mine)
    return {
        **about,
        "keyservice": keyservice,
        "hmac": hmac_path,
        "delivered": sum(r.delivered for r in mine),
        "offered": sum(r.offered for r in mine),
        "target_met": all_delivered and ks_rate >= TARGET_KEYSERVICE_EVENTS_PER_S,
        "hmac_target_met": all_delivered and hmac_rate >= TARGET_HMAC_EVENTS_PER_S,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000,
                        help="distinct children (one record each) in the worst-case scenario")
    parser.add_argument("--children", type=int, default=20000,
                        help="children of the simulated population")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    run_started = time.perf_counter()
    admin = KafkaConnection.from_env(ADMIN)
    load_at_start = round(os.getloadavg()[0], 2)
    kids = children(args.events, seed=99)
    pop = simulate(args.seed, children=args.children, months=args.months,
                   authorities=AUTHORITIES)
    sectors = {a.agency_id: a.sector for a in pop.world.agencies}
    population = [Export(agency, sectors[agency], [publisher_record(r) for r in recs])
                  for agency, recs in by_agency(pop.records)]
    pop_records = sum(len(e.records) for e in population)

    records = sign_records(kids, "BENCH")
    started = time.perf_counter()
    for record in records:
        prepared = prepare(record, AGENCY, KEY)
        codec.encode(to_event(prepared, AGENCY, Sector.POLICE, KEY, "0" * 32))
    pure_s = time.perf_counter() - started

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    agencies = [AGENCY, *(e.agency for e in population)]
    create_topics(admin, [TopicSpec(topics.ingress(prefix, a), 6, 1, {}) for a in agencies])
    apply(admin, Registry(validate(
        (Party(AGENCY, Kind.AGENCY, Sector.POLICE),
         *(Party(e.agency, Kind.AGENCY, e.sector) for e in population),
         Party(Service.KEYSERVICE, Kind.SERVICE)), "publish bench")), prefix)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        service = local.prepare(Path(tmp) / "keyservice", agencies, free_port(),
                                quota=(10**9, 10**12))
        env = {**os.environ, **admin.as_principal(Service.KEYSERVICE).env(),
               "SAFEHUB_TOPIC_PREFIX": prefix}
        with local.serving(service, env, Path(tmp) / "keyservice.log") as server:
            bench = Bench(admin, prefix, Path(tmp), service, server.pid)
            with service.client(AGENCY) as client:
                # Imports, the server's first call, and the client's worker processes, which
                # a process starts once (an agency's `safehub publish` when it opens).
                client.start_workers()
                client.evaluate(1, [b"warm up %d" % i for i in range(4 * client.batch_size)])
            for n in range(args.rounds):
                order = ["hmac", "keyservice"] if n % 2 == 0 else ["keyservice", "hmac"]
                for path in order:
                    # New record references each round for the distinct children; the
                    # population's are its own (resent every round, into new vaults).
                    distinct = [Export(AGENCY, Sector.POLICE,
                                       sign_records(kids, f"B{n}{path[0]}"))]
                    rounds.append(bench.run(DISTINCT, path, distinct, f"{n}{path[0]}d"))
                    print(json.dumps(_round_doc(rounds[-1])), flush=True)
                for path in order:
                    rounds.append(bench.run(POPULATION, path, population,
                                            f"{n}{path[0]}p"))
                    print(json.dumps(_round_doc(rounds[-1])), flush=True)
            # The key derivation alone (no vault, no broker), as the publisher batches it.
            oprf, close = bench.keying(AGENCY)
            try:
                started = time.perf_counter()
                for i in range(0, len(records), PUBLISH_BATCH):
                    prepare_many(records[i:i + PUBLISH_BATCH], AGENCY, oprf)
                derive_s = time.perf_counter() - started
            finally:
                close()
    delete_topics_with_prefix(admin, prefix)
    distinct_doc = _scenario_doc(rounds, DISTINCT, {
        "records": f"{args.events} per round, one agency, one per child, every child distinct "
                   "(three distinct match-key inputs per event with an NHS number, two without; "
                   "blocks shared by children born the same day)",
        "agencies": 1,
        "events_per_round": args.events,
    })
    population_doc = _scenario_doc(rounds, POPULATION, {
        "records": f"the simulated population (seed {args.seed}, {args.children} children, "
                   f"{args.months} months, {AUTHORITIES} authorities): each agency's records "
                   "in arrival order (resent duplicates included) through its own publisher as "
                   "its own principal, with its own keying and a fresh cache; agencies one "
                   "after another, the round's rate = its events / the sum of the agencies' "
                   "publish times",
        "agencies": len(population),
        "events_per_round": pop_records,
        "records_per_agency_range": [min(len(e.records) for e in population),
                                     max(len(e.records) for e in population)],
        "distinct_identities_per_agency_record": round(
            sum(len({r.identity for r in e.records}) for e in population) / pop_records, 3),
    })
    result = {
        "bench": "publish",
        "rounds": args.rounds,
        "pseudonymise_encode_us_per_event": round(pure_s / args.events * 1e6, 1),
        "keyservice_derive_only_us_per_event": round(derive_s / args.events * 1e6, 1),
        "keyservice_keying": "as safehub publish opens it (producers/keysource.py): "
                             f"{KEYSERVICE_BATCH} inputs per PRF call into CachingPRF over "
                             "KeyServiceClient (512 elements per HTTPS call, in worker "
                             "processes started once per publishing process); "
                             "a fresh cache for every agency and round",
        "scenarios": {DISTINCT: distinct_doc, POPULATION: population_doc},
        "every_round": [_round_doc(r) for r in rounds],
        "target_events_per_s": TARGET_KEYSERVICE_EVENTS_PER_S,
        "hmac_target_events_per_s": TARGET_HMAC_EVENTS_PER_S,
        "transport": "SASL_SSL, SCRAM-SHA-512 (each agency as its own principal); key service "
                     "over HTTPS on 127.0.0.1, a separate process",
        "cores": os.cpu_count(),
        "load_average_1min_at_start": load_at_start,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - run_started, 1),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "publish.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "every_round"}, indent=2))
    return 0 if all(r.delivered == r.offered for r in rounds) else 1


def _round_doc(r: Round) -> dict[str, object]:
    doc: dict[str, object] = {"scenario": r.scenario, "path": r.path,
                              "events_per_s": round(r.events_per_s),
                              "agency_cpu_us_per_event": round(r.agency_cpu_us_per_event, 1)}
    if r.path == "keyservice":
        doc["elements"] = r.elements
        doc["service_cpu_us_per_element"] = round(r.service_cpu_us_per_element, 1)
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
