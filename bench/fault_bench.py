"""Fault run: the whole pipeline on 3 brokers while brokers and correlator workers are killed.

    python -m bench.fault_bench [--events 100000] [--publish-seconds 120] [--max-seconds 480]

Starts its own secure 3-node cluster (the launcher, cluster `faultbench-<pid>`: its own state
folder and free ports, so it never touches `safehub kafka up`'s or the tests' clusters), makes
the topics (3 replicas, min.insync.replicas 2), principals and ACLs, and runs the real
services as processes under the demo's supervisor, each as its own principal: two correlator
workers (worker ids w1 and w2), the router and csc-leeds's inbox (SQLite). Three agencies
publish `--events` valid events (a dozen per child, every child in Leeds) as their own
principals, paced evenly over `--publish-seconds`, while
- one broker is SIGKILLed every 15 s, round robin, and restarted 5 s later (a kill waits, at
  most 60 s, until all three are registered and every partition's ISR is full; with
  --strict-cadence only until all are registered);
- a correlator worker is SIGKILLed 3 times (at 25%, 55% and 85% of the publishing), and the
  supervisor restarts it, as a process manager would (it restarts any service that exits).
The faults stop when the publishing ends; the pipeline then drains and settles,
the services are stopped, and the run is judged (bench/fault_checks.py): every acknowledged
event is on its ingress topic; for every child, the highest tier on `correlated`, on the hub's
topic and in the inbox is the tier the pure core reaches over the events on the ingress topics;
no alert id has two versions; no inbox holds two rows of one alert; and `safehub audit replay`
(as the `auditor`, with the inbox database) reports a full match. Per kill, how long until the
pipeline's output moved again, and how long until the cluster had no partition below
min.insync.replicas (where no acks=all write completes). The whole run is bounded by
`--max-seconds`; every process it started is stopped, and the cluster removed, however it
ends. Writes bench/results/fault.json, failures included, and exits non-zero when a check
fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from bench.fault_checks import (
    AGENCIES,
    HUB,
    IsrSample,
    Sample,
    below_min_isr,
    inbox_count,
    isr_timeline,
    judge,
    population,
    recovery,
)
from safehub import topics
from safehub.bus import (
    discard_stuck,
    make_admin,
    make_consumer,
    make_producer,
    wedged_after_s,
)
from safehub.connection import KafkaConnection
from safehub.deploy.kafka.launcher import Cluster
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, Service, validate
from safehub.schemas.codec import encode
from safehub.services import demo_pipeline
from safehub.services.audit.reading import read_all
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.router.table import load_routing_table
from safehub.services.supervisor import RestartPolicy, Running, ServiceSpec, Supervisor, python_env

RESULTS = Path(__file__).resolve().parent / "results"
WORKERS = ("w1", "w2")
BROKER_EVERY_S = 15.0
BROKER_DOWN_S = 5.0
MIN_INSYNC = 2  # the launcher's min.insync.replicas on 3 nodes, internal topics' included
WORKER_KILLS_AT = (0.25, 0.55, 0.85)  # of the publishing time
QUIET_S = 8.0  # nothing consumed or written for this long, with no lag: settled


class Overrun(BaseException):
    """The run's time bound (or a SIGTERM) ended it. A BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way (a library's included) can swallow it: a run of
    20,000 events outlived its bound by minutes that way."""


def registry() -> Registry:
    parties = [Party(a, Kind.AGENCY, s) for a, s in AGENCIES.items()]
    # The router needs every receiver's topics, not only csc-leeds's.
    parties += [Party(h, Kind.HUB) for h in sorted(load_routing_table().receivers())]
    parties += [Party(s.value, Kind.SERVICE) for s in Service]
    parties.append(Party("auditor", Kind.AUDITOR))
    return Registry(validate(parties, "fault bench registry"))


class FaultRun:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.cluster = Cluster(f"faultbench-{os.getpid()}")
        self.prefix = f"fault{uuid.uuid4().hex[:6]}."
        self.admin: KafkaConnection | None = None
        self.supervisor: Supervisor | None = None
        self.spawned: list[int] = []  # every service pid, for the final process-group sweep
        self.stop_chaos = threading.Event()
        self.stop_sampling = threading.Event()
        self.threads: list[threading.Thread] = []
        self.samples: list[Sample] = []
        self.isr_samples: list[IsrSample] = []
        self.broker_kills: list[dict[str, Any]] = []
        self.worker_kills: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.result: dict[str, Any] = {}
        self.inbox_db = work / "inbox.sqlite"

    def at(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    # -- setup ------------------------------------------------------------------------
    def setup(self) -> None:
        started = time.monotonic()
        self.admin = self.cluster.up(nodes=3).connection(ADMIN)
        reg = registry()
        demo_pipeline.prepare_cluster(self.admin, reg, self.prefix, AGENCIES)
        self.result["setup_s"] = round(time.monotonic() - started, 1)
        base = {k: v for k, v in python_env().items() if not k.startswith("SAFEHUB_")}
        # As a deployment's process manager: any service that exits is restarted, after a
        # backoff of 1 s doubling up to 5 s (workers killed on purpose included).
        self.supervisor = Supervisor(self.work, base, RestartPolicy(
            first_delay_s=1.0, max_delay_s=5.0, max_restarts=100, window_s=600.0))
        for w in WORKERS:
            self.start(ServiceSpec(f"correlator-{w}", ("correlator",), {
                **self.env("correlator"), "SAFEHUB_CORRELATOR_WORKER_ID": w,
                "SAFEHUB_CORRELATOR_DATA_DIR": str(self.work / f"correlator-{w}"),
                "SAFEHUB_CORRELATOR_BATCH": "1000"}))
        self.start(ServiceSpec("router", ("router",), {
            **self.env("router"),
            "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{self.work / 'router.sqlite'}"}))
        self.start(ServiceSpec("inbox", ("inbox",), {
            **self.env(HUB), "SAFEHUB_INBOX_AGENCIES": HUB,
            "SAFEHUB_INBOX_DATABASE_URL": f"sqlite:///{self.inbox_db}"}))
        self.wait_for_workers(len(WORKERS), 120)
        self.result["services_ready_s"] = round(time.monotonic() - started, 1)

    def env(self, principal: str) -> dict[str, str]:
        assert self.admin is not None
        return {**self.admin.as_principal(principal).env(), "SAFEHUB_TOPIC_PREFIX": self.prefix}

    def start(self, spec: ServiceSpec) -> Running:
        assert self.supervisor is not None
        running = self.supervisor.start(spec)
        self.spawned.append(running.process.pid)
        return running

    def wait_for_workers(self, members: int, timeout: float) -> None:
        """Both workers in the group before the data comes, so that they share partitions."""
        assert self.admin is not None and self.supervisor is not None
        group = topics.correlator_group(self.prefix)
        admin = make_admin(self.admin, "fault-bench-group")
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.supervisor.check()
                try:
                    info = admin.describe_groups([group])[group]
                    if info["group_state"] == "Stable" and len(info["members"]) == members:
                        return
                except Exception:  # noqa: BLE001 - a new group's coordinator may be loading
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"correlator group not stable with {members} members")
                time.sleep(0.5)
        finally:
            admin.close()

    # -- faults -----------------------------------------------------------------------
    def brokers_and_replication(self, admin: Any) -> tuple[int, bool]:
        """(brokers registered, every partition's ISR complete); (0, False) when unknown."""
        with contextlib.suppress(Exception):
            brokers = len(admin.describe_cluster()["brokers"])
            full = all(len(p["isr_nodes"]) == len(p["replica_nodes"])
                       for t in admin.describe_topics() for p in t["partitions"])
            return brokers, full
        return 0, False

    def chaos(self) -> None:
        """Kill one broker every BROKER_EVERY_S, round robin, and restart it BROKER_DOWN_S
        later. Unless --strict-cadence, a kill first waits (at most 60 s) until all three are
        registered and every partition's ISR is full, checked just before the kill: a restarted
        broker leaves the ISRs a few seconds after it is back, so a check right after the
        restart passes too early. With a strict 15 s on a loaded machine the restarted brokers
        never caught up, partitions fell below min.insync.replicas and writes stalled."""
        assert self.admin is not None
        admin = make_admin(self.admin, "fault-bench-chaos", request_timeout_ms=5000)
        n = 0
        next_kill = time.monotonic() + BROKER_EVERY_S
        try:
            while not self.stop_chaos.wait(max(0.0, next_kill - time.monotonic())):
                waited = time.monotonic()
                brokers, full = self.brokers_and_replication(admin)
                while (not self.stop_chaos.is_set() and time.monotonic() < waited + 60
                       and not (brokers == 3 and (full or self.args.strict_cadence))):
                    time.sleep(0.5)
                    brokers, full = self.brokers_and_replication(admin)
                if self.stop_chaos.is_set():
                    break
                node = n % 3 + 1
                killed = time.monotonic()
                self.cluster.kill_node(node)
                self.broker_kills.append({
                    "node": node, "at_s": self.at(), "fully_replicated_before": full,
                    "waited_for_the_cluster_s": round(killed - waited, 1)})
                time.sleep(BROKER_DOWN_S)  # restarted even when asked to stop meanwhile
                self.cluster.restart_node(node)
                next_kill = killed + BROKER_EVERY_S
                n += 1
        finally:
            admin.close()

    def kill_worker(self, worker: str) -> None:
        assert self.supervisor is not None
        r = next(r for r in self.supervisor.running if r.spec.name == f"correlator-{worker}")
        pid = r.process.pid
        r.process.kill()
        r.process.wait(30)
        self.worker_kills.append({"worker": worker, "pid": pid, "at_s": self.at(),
                                  "t": time.monotonic()})

    def sample(self) -> None:
        """Twice a second: the correlator group's committed offsets and the inbox's rows."""
        assert self.admin is not None
        admin = make_admin(self.admin, "fault-bench-sampler", request_timeout_ms=10_000)
        group = topics.correlator_group(self.prefix)
        try:
            while not self.stop_sampling.wait(0.5):
                offsets: dict[tuple[str, int], int] = {}
                with contextlib.suppress(Exception):
                    got = admin.list_group_offsets(group)[group]
                    offsets = {(tp.topic, tp.partition): m.offset for tp, m in got.items()
                               if topics.in_family(tp.topic, topics.Family.INGRESS, self.prefix)}
                self.samples.append((time.monotonic(), offsets, inbox_count(self.inbox_db)))
        finally:
            admin.close()

    def sample_isr(self) -> None:
        """Every second: the partitions below min.insync.replicas or without a leader, where
        no acks=all write completes (internal topics included: the transaction coordinators
        write the same way)."""
        assert self.admin is not None
        admin = make_admin(self.admin, "fault-bench-isr", request_timeout_ms=5000)
        try:
            while not self.stop_sampling.wait(1.0):
                try:
                    described = admin.describe_topics()
                except (KafkaError, OSError):
                    continue  # a broker away: no sample this second
                below = tuple(sorted(
                    f"{t['name']}[{p['partition_index']}]" for t in described
                    for p in t["partitions"]
                    if p["leader_id"] < 0 or len(p["isr_nodes"]) < MIN_INSYNC))
                self.isr_samples.append((time.monotonic(), below))
        finally:
            admin.close()

    def thread(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    # -- the run ----------------------------------------------------------------------
    def publish(self) -> set[str]:
        """All events, paced, each agency as itself; returns the acknowledged event ids."""
        assert self.admin is not None and self.supervisor is not None
        t0 = int(time.time() * 1000) - 40 * 86_400_000
        events = population(self.args.events, self.args.seed, t0)
        producers = {a: make_producer(self.admin_as(a), f"fault-{a}") for a in AGENCIES}
        pending: list[tuple[str, Any]] = []
        duration = self.args.publish_seconds
        rate = max(1, -(-len(events) // int(duration)))
        self.result["rate_events_per_s"] = rate
        kills = list(zip(WORKER_KILLS_AT, (WORKERS[0], WORKERS[1], WORKERS[0]), strict=True))
        started = time.monotonic()
        self.result["publish_started_s"] = self.at()
        self.thread(self.chaos, "fault-chaos")
        sent = 0
        try:
            while sent < len(events):
                now = time.monotonic() - started
                due = min(len(events), int(now * rate) + max(1, rate // 10))
                for e in events[sent:due]:
                    fut = producers[e.agency_id].send(
                        topics.ingress(self.prefix, e.agency_id),
                        key=e.subject.linkage_block.to_bytes(4, "big"), value=encode(e))
                    pending.append((e.event_id, fut))
                sent = due
                while kills and now >= kills[0][0] * duration:
                    self.kill_worker(kills.pop(0)[1])
                self.supervisor.check()
                time.sleep(0.1)
            # The faults go with the publishing; the pipeline then drains without them.
            self.stop_chaos.set()
            pending = self.deliver(producers, pending, {e.event_id: e for e in events})
        finally:
            for p in producers.values():
                with contextlib.suppress(Exception):  # not to hide why the run ended
                    p.close(10)
        self.stop_chaos.set()
        self.result["publish_s"] = round(time.monotonic() - started, 1)
        self.result["publish_ended_s"] = self.at()
        acked = {eid for eid, fut in pending if fut.is_done and fut.succeeded()}
        self.result["events_acknowledged"] = len(acked)
        return acked

    def deliver(self, producers: dict[str, Any], pending: list[tuple[str, Any]],
                by_id: dict[str, Any]) -> list[tuple[str, Any]]:
        """As an agency's publisher does (producers/publisher.py): whatever the brokers did not
        acknowledge (the producer's delivery timeout ran out while partitions were below
        min.insync.replicas) is sent again, until all are acknowledged or 240 s have passed. A
        producer that leaves records neither acknowledged nor failed past its delivery timeout
        (run M: kafka-python 3.0.12 under broker kills) is stuck: it is replaced, and its
        records are sent again on the new one. A resent event that had arrived after all is a
        duplicate the correlator drops (per agency and event id)."""
        deadline = time.monotonic() + 240
        resent, renewed = 0, 0
        while True:
            # One bound for the round, shared by the producers: flushed one after another,
            # each with a bound of its own, a stuck first one used up the whole deadline (run
            # P: 3,103 events neither settled nor sent again).
            bound = max(wedged_after_s(p) for p in producers.values())
            round_ends = min(deadline, time.monotonic() + bound)
            for p in producers.values():
                with contextlib.suppress(KafkaTimeoutError):  # judged below
                    p.flush(max(0.1, round_ends - time.monotonic()))
            failed = [eid for eid, fut in pending if not fut.is_done or fut.failed()]
            if not failed or time.monotonic() >= deadline:
                break
            stuck = {by_id[eid].agency_id for eid, fut in pending if not fut.is_done}
            for agency in stuck:
                old, producers[agency] = producers[agency], make_producer(
                    self.admin_as(agency), f"fault-{agency}-{renewed}")
                renewed += 1
                discard_stuck(old)
            resent += len(failed)
            again = set(failed)
            pending = [(eid, fut) for eid, fut in pending if eid not in again]
            for eid in failed:
                e = by_id[eid]
                pending.append((eid, producers[e.agency_id].send(
                    topics.ingress(self.prefix, e.agency_id),
                    key=e.subject.linkage_block.to_bytes(4, "big"), value=encode(e))))
        self.result["events_resent"] = resent
        self.result["producers_replaced"] = renewed
        return pending

    def admin_as(self, agency: str) -> KafkaConnection:
        assert self.admin is not None
        return self.admin.as_principal(agency)

    def lag(self, consumer: Any, admin: Any, group: str, topic_names: list[str]) -> int:
        parts = [TopicPartition(t, p) for t in topic_names
                 for p in sorted(consumer.partitions_for_topic(t) or [])]
        ends = consumer.end_offsets(parts)
        got = admin.list_group_offsets(group)[group]
        return sum(max(0, ends[tp] - (got[tp].offset if tp in got else 0)) for tp in parts)

    def settle(self, timeout: float) -> None:
        """Until the correlator, the router and the inbox have consumed everything, and then
        nothing has moved for QUIET_S (no new alert, no new inbox row). The router's lag on
        `correlated` may stay at one per partition: the correlator's transaction markers take
        an offset that no consumer commits past."""
        assert self.admin is not None and self.supervisor is not None
        ingress = [topics.ingress(self.prefix, a) for a in AGENCIES]
        admin = make_admin(self.admin, "fault-bench-settle", request_timeout_ms=5000)
        consumer = make_consumer(self.admin, None, client_id="fault-bench-ends",
                                 isolation_level="read_committed")
        outputs = [topics.correlated(self.prefix), topics.alerts(self.prefix, HUB)]
        deadline = time.monotonic() + timeout
        last: Any = None
        quiet_since = time.monotonic()
        seen: tuple[int | None, int | None, int] = (None, None, 0)
        try:
            while True:
                self.supervisor.check()
                if time.monotonic() >= deadline:
                    self.dump_stacks()
                assert time.monotonic() < deadline, (
                    f"the pipeline did not settle in time (last seen: correlator lag {seen[0]}, "
                    f"router and inbox behind {seen[1]}, inbox rows {seen[2]})")
                try:
                    lag = self.lag(consumer, admin, topics.correlator_group(self.prefix), ingress)
                    behind = self.lag(consumer, admin, topics.service_group(self.prefix, HUB),
                                      [outputs[1]])
                    markers = len(consumer.partitions_for_topic(outputs[0]) or [])
                    behind += max(0, self.lag(consumer, admin,
                                              topics.service_group(self.prefix, "router"),
                                              [outputs[0]]) - markers)
                    parts = [TopicPartition(t, p) for t in outputs
                             for p in sorted(consumer.partitions_for_topic(t) or [])]
                    ends = sorted(consumer.end_offsets(parts).values())
                except Exception:  # noqa: BLE001 - a broker is down: ask again
                    time.sleep(1)
                    continue
                rows = inbox_count(self.inbox_db)
                seen = (lag, behind, rows)
                if lag == 0 and "correlator_consumed_all_s" not in self.result:
                    self.result["correlator_consumed_all_s"] = self.at()
                now = (lag, ends, rows)
                if now != last:
                    last, quiet_since = now, time.monotonic()
                elif lag == 0 and behind == 0 and time.monotonic() - quiet_since >= QUIET_S:
                    self.result["settled_s"] = round(self.at() - QUIET_S, 1)
                    return
                time.sleep(1)
        finally:
            admin.close()
            consumer.close()

    def dump_stacks(self) -> None:
        """Every service's threads, in its log (`safehub` dumps them on SIGUSR1): where one
        that stopped making progress waits. Kept with --keep."""
        assert self.supervisor is not None
        for r in self.supervisor.running:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        self.result["stacks_dumped_in"] = str(self.work / "logs")

    def replay(self) -> dict[str, Any]:
        """`safehub audit replay` as the auditor, with the inbox database."""
        report = self.work / "replay-report.json"
        assert self.supervisor is not None
        env = {**self.supervisor.base_env, **self.env("auditor")}
        done = subprocess.run(
            [sys.executable, "-m", "safehub.cli", "audit", "replay", "--no-progress",
             "--workers", "2", "--inbox-db", f"sqlite:///{self.inbox_db}", "--report",
             str(report)], env=env, capture_output=True, text=True, timeout=240, check=False)
        out: dict[str, Any] = {"exit_code": done.returncode}
        if report.exists():
            full = json.loads(report.read_text())
            out.update({k: v for k, v in full.items() if k != "differences"})
            out["differences"] = full.get("differences", [])[:10]
        else:
            out["output_tail"] = (done.stdout + done.stderr)[-2000:]
        return out

    def run(self) -> list[str]:
        self.setup()
        self.thread(self.sample, "fault-sampler")
        self.thread(self.sample_isr, "fault-isr-sampler")
        acked = self.publish()
        unacknowledged = self.args.events - len(acked)
        self.settle(self.args.settle_timeout)
        self.stop_chaos.set()
        for t in self.threads:
            if t.name == "fault-chaos":
                t.join(90)
        assert self.supervisor is not None and self.admin is not None
        self.spawned += [r.process.pid for r in self.supervisor.running]
        # Only the faults we made: any other restart is a service that failed by itself.
        self.result["service_restarts"] = {r.spec.name: len(r.restarts)
                                           for r in self.supervisor.running}
        self.result["exit_codes_at_stop"] = dict(self.supervisor.stop_all(60))
        self.stop_sampling.set()
        auditor = self.admin.as_principal("auditor")
        started = time.monotonic()
        ingress = read_all(auditor, [topics.ingress(self.prefix, a) for a in AGENCIES])
        correlated = read_all(auditor, [topics.correlated(self.prefix)])
        routed = read_all(auditor, [topics.alerts(self.prefix, HUB)])
        verdict = judge(load_rules(DEFAULT_RULES_PATH), acked, ingress, correlated, routed,
                        self.inbox_db)
        self.result["checks"] = verdict.figures
        replay = self.replay()
        self.result["replay"] = replay
        self.result["checks_s"] = round(time.monotonic() - started, 1)
        problems = list(verdict.problems)
        if unacknowledged:
            problems.append(f"{unacknowledged} events never acknowledged by the brokers")
        if replay["exit_code"] != 0 or replay.get("ok") is False:
            problems.append("audit replay did not report a full match")
        if replay.get("unaccounted_events"):
            problems.append(f"{replay['unaccounted_events']} events never journalled")
        # Restarts we did not cause: a service that exited by itself (its policy when it
        # cannot go on, e.g. a transaction the brokers would not commit) and was restarted.
        self.result["exits_by_themselves"] = self.own_exits()
        return problems

    def own_exits(self) -> dict[str, dict[str, int]]:
        """Per service, its exits with a code other than SIGKILL's (ours), by code."""
        out: dict[str, dict[str, int]] = {}
        for log in sorted((self.work / "logs").glob("*.log")):
            codes: dict[str, int] = {}
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("supervisor: service ") and " exited with code " in line:
                    code = line.split(" exited with code ")[1].split(";")[0]
                    if code != str(-signal.SIGKILL):
                        codes[code] = codes.get(code, 0) + 1
            if codes:
                out[log.stem] = codes
        return out

    def figures(self) -> None:
        """Kills with their recovery times, from the samples."""
        def timed(kill: dict[str, Any], at: float) -> dict[str, Any]:
            moved = recovery(self.samples, at)
            return {**kill, **moved,
                    **below_min_isr(self.isr_samples, at, moved["output_s"])}

        self.result["broker_kills"] = [timed(k, self.t0 + k["at_s"]) for k in self.broker_kills]
        self.result["worker_kills"] = [
            timed({k2: v for k2, v in k.items() if k2 not in ("t", "pid")}, k["t"])
            for k in self.worker_kills]
        self.result["partitions_below_min_isr"] = isr_timeline(self.isr_samples, self.t0)
        consumed = self.result.get("correlator_consumed_all_s")
        began = self.result.get("publish_started_s")
        if consumed is not None and began is not None:
            # Bounded by the publishing pace: the drain after it says more.
            self.result["events_per_s_publish_start_to_all_consumed"] = round(
                self.args.events / max(0.1, consumed - began))
            ended = self.result.get("publish_ended_s")
            if ended is not None:
                self.result["consumed_all_after_publishing_ended_s"] = round(consumed - ended, 1)

    def cleanup(self) -> None:
        self.stop_chaos.set()
        for t in self.threads:
            if t.name == "fault-chaos":
                t.join(90)
        self.stop_sampling.set()
        if self.supervisor is not None:
            self.spawned += [r.process.pid for r in self.supervisor.running]
            self.supervisor.stop_all(30)
        self.spawned += [k["pid"] for k in self.worker_kills]
        for pid in set(self.spawned):  # their own sessions: any child they left behind too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.cluster.down(purge=True)


def commit() -> str:
    """The code the run ran (the tree holding this file; `+` if it has local changes)."""
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                            "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + ("+" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--publish-seconds", type=float, default=120.0,
                        help="spread the events over this long (the faults' time)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--max-seconds", type=float, default=480.0,
                        help="the whole run's bound, setup and checks included")
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument("--strict-cadence", action="store_true",
                        help="kill a broker every 15 s even when the last one has not caught up")
    parser.add_argument("--keep", action="store_true", help="keep the services' logs")
    parser.add_argument("--out", type=Path, default=RESULTS / "fault.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="safehub-fault-"))
    run = FaultRun(args, work)
    run.result.update({
        "bench": "fault run: 3 brokers, 2 correlator workers, router, inbox, under kills",
        "events": args.events, "publish_seconds": args.publish_seconds,
        "strict_cadence": args.strict_cadence,
        "broker_kill_every_s": BROKER_EVERY_S, "broker_down_s": BROKER_DOWN_S,
        "commit": commit(), "cores": os.cpu_count(),
        "load_at_start": [round(x, 2) for x in os.getloadavg()]})
    problems: list[str] = []

    def overrun(signum: int, _frame: FrameType | None) -> None:
        signal.setitimer(signal.ITIMER_REAL, 5.0)  # again and again, until the cleanup
        raise Overrun(f"stopped by signal {signum} (time bound {args.max_seconds:.0f} s or "
                      "SIGTERM)")

    previous = signal.signal(signal.SIGTERM, overrun)
    signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, args.max_seconds)
    try:
        problems = run.run()
    except (Overrun, Exception) as exc:  # noqa: BLE001 - recorded in the results, then exit 1
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            run.cleanup()
        finally:
            signal.signal(signal.SIGTERM, previous)
            run.figures()
            run.result["total_s"] = run.at()
            run.result["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
            run.result["problems"] = problems
            run.result["ok"] = not problems
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(run.result, indent=2) + "\n")
            print(json.dumps(run.result, indent=2))
            if args.keep:
                print(f"logs kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
