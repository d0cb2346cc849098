"""The router's Kafka shell: `correlated` + `alert-acks.<hub>` in, `alerts.<hub>` + `audit` out.

Per poll: decode, feed the pure core (receive / acknowledge), tick the clusters that are due,
send the notifications and their audit entries and wait for the broker, save the touched
clusters to SQL, dead-letter what could not be read, and only then commit the input offsets.

Who acknowledged is said by the topic, never by the payload: only hub H may write
`alert-acks.H` (deploy/acl.py). An ack on H's topic that claims another agency is refused and
dead-lettered; one that agrees with its topic is handed to the core as H's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from safehub.bus import WEDGED_AFTER_DELIVERY_S, close_producer
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consuming import (
    EXIT_TEMPORARY,
    Action,
    Backoff,
    Batch,
    ConsumeLoop,
    ErrorPolicy,
    Outage,
    Rewind,
    Rule,
    ServiceStopped,
)
from safehub.consuming import OutageTooLong as OutageTooLong  # `safehub router` exits 75 on it
from safehub.errors import BrokerError, StoreError, ValidationError
from safehub.observability.watch import ServiceWatch
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AlertAck, CorrelatedAlert
from safehub.schemas.vocabulary import RouteReason
from safehub.services.audit.journal import AuditJournal
from safehub.services.router import core
from safehub.services.router.core import ClusterState, Notification
from safehub.services.router.store import RouterStore
from safehub.services.router.table import RoutingTable
from safehub.topics import acks, alerts, audit, correlated, deadletter

log = logging.getLogger(__name__)

Clock = Callable[[], int]
FORGET_CHECK_MS = 3_600_000  # how often to look for clusters to forget (core.forgettable)
BACKOFF_S = (1.0, 30.0)  # first and longest wait between retries after a failed step
# A flush is waited for in slices, so that a broker that stops acknowledging is reported
# (log, /readyz) while the producer keeps retrying; the producer's delivery timeout bounds it.
FLUSH_SLICE_S = 5.0
# A producer past WEDGED_AFTER_DELIVERY_S (bus.py) has stopped working (seen in the fault run:
# a router waiting 8 minutes after a broker kill, its heartbeat still beating). The router then
# stops with EXIT_TEMPORARY and is restarted with fresh clients; nothing of the batch was saved
# or committed, so it is read again, and a notification sent twice keeps its id (inboxes drop it).
# The router's producer: a send to a topic whose metadata the producer lacks (the first
# escalation to a receiver, say) waits this long for the broker, not kafka-python's 60 s, so
# that an outage is noticed, logged and retried with backoff from the loop.
# Both: after an outage, try the broker again at least every 5 s (kafka-python: 30 s), so
# that the router is back within seconds of the broker.
PRODUCER_SETTINGS: Mapping[str, Any] = {"max_block_ms": 10_000, "reconnect_backoff_max_ms": 5_000}
# The router's consumer: a router restarted after a crash gets its partitions back once the
# dead instance's session expires, in 10 s rather than kafka-python's 45 s. Heartbeats come
# from the client's own thread, so a step blocked on the broker does not end the session.
CONSUMER_SETTINGS: Mapping[str, Any] = {"session_timeout_ms": 10_000,
                                        "heartbeat_interval_ms": 3_000,
                                        "reconnect_backoff_max_ms": 5_000}
CLOSE_S = 10.0
# A record that cannot be read is dead-lettered. A step that fails on the broker or the
# database is retried: the state is rebuilt from the store and the input re-read from the
# committed offsets, since the memory may be ahead of what was saved or sent (re-sent
# notifications keep their ids, so the inboxes drop them). `max_outage_s` is set from
# SAFEHUB_ROUTER_MAX_OUTAGE_S; anything else is a bug (exit 70). OSError: kafka-python's
# network loop lets a socket error escape now and then (ENOTCONN from the TLS handshake with a
# broker that has just gone, seen in the broker outage test), which is the broker being away.
POLICY = ErrorPolicy(
    "router",
    (Rule((ValidationError,), Action.DEAD_LETTER),
     Rule((BrokerError, StoreError, KafkaError, OSError), Action.RETRY)),
    Backoff(*BACKOFF_S),
    rewind=Rewind.COMMITTED,
)


def input_topics(table: RoutingTable, prefix: str) -> list[str]:
    """`correlated` and the ack topic of every hub the router may send an alert to."""
    return [correlated(prefix), *(acks(prefix, hub) for hub in sorted(table.receivers()))]


def output_topics(table: RoutingTable, prefix: str) -> list[str]:
    return [*(alerts(prefix, hub) for hub in sorted(table.receivers())), audit(prefix),
            deadletter(prefix)]


class Router:
    def __init__(self, table: RoutingTable, consumer: KafkaConsumer, producer: KafkaProducer,
                 store: RouterStore, journal: AuditJournal, deadletters: DeadLetterSink,
                 prefix: str, clock: Clock, watch: ServiceWatch | None = None) -> None:
        self._table = table
        self.watch = watch or ServiceWatch("router")
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._journal = journal
        self._deadletters = deadletters
        self._prefix = prefix
        self._clock = clock
        self._ack_topics = {acks(prefix, hub): hub for hub in table.receivers()}
        self._clusters: dict[str, ClusterState] = store.load()
        self._by_alert = {t.alert.alert_id: cid for cid, s in self._clusters.items()
                          for t in s.alerts}
        self._wakeups: dict[str, int] = {}
        self._payloads: dict[str, bytes] = {}  # alert id -> bytes as received, for the store
        self._next_forget = 0  # at the first step: a restart forgets what aged meanwhile
        for cid, state in self._clusters.items():
            self._schedule(cid, state)
        self.sent = 0
        self.refused_acks = 0
        self._loop = ConsumeLoop(consumer, self, POLICY, deadletters, self.watch, "router", log)

    @property
    def failures(self) -> int:
        """Failed steps, ever: each one reloads and retries."""
        return self._loop.failures

    @property
    def outage(self) -> Outage | None:
        return self._loop.outage

    @property
    def backoff_s(self) -> tuple[float, float]:
        backoff = self._loop.policy.backoff
        return backoff.first_s, backoff.longest_s

    @backoff_s.setter
    def backoff_s(self, first_and_longest: tuple[float, float]) -> None:
        self._loop.policy = dataclasses.replace(self._loop.policy,
                                                backoff=Backoff(*first_and_longest))

    @property
    def max_outage_s(self) -> float | None:
        """None: wait for as long as it takes."""
        return self._loop.policy.max_outage_s

    @max_outage_s.setter
    def max_outage_s(self, seconds: float | None) -> None:
        self._loop.policy = dataclasses.replace(self._loop.policy, max_outage_s=seconds)

    @property
    def engine(self) -> Any:
        return self._store.engine

    @property
    def correlated_topic(self) -> str:
        return correlated(self._prefix)

    def _schedule(self, cluster_id: str, state: ClusterState) -> None:
        wake = core.next_wakeup(self._table, state)
        if wake is None:
            self._wakeups.pop(cluster_id, None)
        else:
            self._wakeups[cluster_id] = wake

    def _apply(self, state: ClusterState, touched: dict[str, ClusterState]) -> None:
        self._clusters[state.cluster_id] = state
        touched[state.cluster_id] = state
        self._schedule(state.cluster_id, state)

    def _handle(self, topic: str, value: bytes | None, now: int,
                touched: dict[str, ClusterState], notes: list[Notification]) -> None:
        if topic == self.correlated_topic:
            alert = decode(value, CorrelatedAlert)
            if value is not None:
                self._payloads[alert.alert_id] = value
            state = self._clusters.get(alert.cluster_id, ClusterState(alert.cluster_id))
            state, out = core.receive(self._table, state, alert, now)
            self._by_alert[alert.alert_id] = alert.cluster_id
            self._apply(state, touched)
            notes.extend(out)
            return
        hub = self._ack_topics.get(topic)
        if hub is None:
            raise ValidationError("topic", "not an input topic of the router")
        ack = decode(value, AlertAck)
        if ack.agency_id != hub:
            # Only `hub` can write this topic: a payload naming another agency is a forgery
            # attempt (or a bug) by `hub`, and must not stop the other agency's escalation.
            self.refused_acks += 1
            raise ValidationError("agency_id", f"differs from the hub of {topic}: an ack is "
                                  "taken only from the acting hub's own topic; refused")
        cid = self._by_alert.get(ack.alert_id)
        accepted = False
        if cid is not None:
            state, accepted = core.acknowledge(self._clusters[cid], ack)
            if accepted:
                self._apply(state, touched)
        if not accepted and cid is not None and core.informed(self._table, self._clusters[cid],
                                                              ack):
            # The host authority acknowledged its copy for information: nothing to stop.
            log.info("ack %s for alert %s from host %s: noted, changes nothing",
                     ack.ack_id, ack.alert_id, hub)
            return
        if not accepted:
            self.refused_acks += 1
            log.warning("ack %s for alert %s from %s refused: not sent to that agency",
                        ack.ack_id, ack.alert_id, hub)

    def _tick(self, now: int, touched: dict[str, ClusterState],
              notes: list[Notification]) -> None:
        for cid in [c for c, wake in self._wakeups.items() if wake <= now]:
            state, out = core.tick(self._table, self._clusters[cid], now)
            self._apply(state, touched)
            notes.extend(out)

    def _send(self, notes: list[Notification], now: int) -> None:
        records = []
        for note in notes:
            r = note.routed
            raw = encode(r)
            records.append((alerts(self._prefix, r.receiver_agency),
                            r.alert.alert_id.encode("ascii"), raw, None))
            self._journal.record(note.action, r.alert.alert_id, r.receiver_agency,
                                 hashlib.sha256(raw).digest(), now)
            if r.reason is RouteReason.FALLBACK:
                log.warning("alert %s: no route for area %s, %s (placing %s, %s); sent to "
                            "fallback %s", r.alert.alert_id, r.alert.local_authority,
                            self._table.name_of(r.alert.local_authority),
                            r.alert.placing_authority or "none",
                            self._table.name_of(r.alert.placing_authority), r.receiver_agency)
            elif r.reason is RouteReason.ESCALATION:
                log.info("alert %s escalated to %s", r.alert.alert_id, r.receiver_agency)
        self._deliver(records)
        self._journal.flush()
        self.sent += len(records)
        metrics = self.watch.metrics
        for note in notes:
            r = note.routed
            metrics.produced(alerts(self._prefix, r.receiver_agency))
            metrics.alert(r.alert.tier.value, r.receiver_agency)
            if r.reason is RouteReason.ESCALATION:
                metrics.escalation(r.receiver_agency)

    def _deliver(self, records: list[tuple[str, bytes, bytes, None]]) -> None:
        """Send and wait until the broker acknowledged every record, or one failed.

        While the broker is away the producer keeps retrying each record (up to its delivery
        timeout); this waits for it, saying so once, rather than giving up early and
        re-sending a record that the producer would deliver anyway: a copy for every inbox.
        """
        futures = [self._producer.send(topic, key=key, value=value, headers=[])
                   for topic, key, value, _ in records]
        give_up = time.monotonic() + WEDGED_AFTER_DELIVERY_S + (
            self._producer.config["delivery_timeout_ms"] / 1000)
        while True:
            try:
                self._producer.flush(FLUSH_SLICE_S)
                break
            except KafkaTimeoutError:
                self._trouble("the broker does not acknowledge the router's notifications")
                if time.monotonic() > give_up:
                    raise ServiceStopped(
                        "notifications neither acknowledged nor failed past the producer's "
                        "delivery timeout: its client has stopped working",
                        EXIT_TEMPORARY) from None
                self.watch.heartbeat.beat("router")
        failed = [f for f in futures if f.failed()]
        if failed:
            raise BrokerError(f"{len(failed)} of {len(futures)} notifications not "
                              f"acknowledged: {type(failed[0].exception).__name__}")

    def _trouble(self, reason: str) -> None:
        self._loop.trouble(reason)

    def not_ready(self) -> str | None:
        """For /readyz: why the router is not making progress, or None."""
        return self._loop.not_ready()

    def _forget(self, now: int) -> None:
        gone = [cid for cid, state in self._clusters.items()
                if core.forgettable(self._table, state, now)]
        if not gone:
            return
        self._store.forget(gone)
        for cid in gone:
            for t in self._clusters.pop(cid).alerts:
                self._by_alert.pop(t.alert.alert_id, None)
                self._payloads.pop(t.alert.alert_id, None)
            self._wakeups.pop(cid, None)
        log.info("forgot %d cluster(s) with nothing left to do and no alert for %.0f days",
                 len(gone), self._table.forget_after_ms / 86_400_000)

    def step(self, timeout_ms: int = 500) -> int:
        """One batch under the router's policy; returns how many records it held."""
        return self._loop.step(None, timeout_ms)

    def handle(self, batch: Batch) -> None:
        """Feed the core, tick what is due, send and wait for the broker, save the touched
        clusters; the loop then dead-letters what could not be read and commits."""
        now = self._clock()
        if now >= self._next_forget:
            self._forget(now)
            self._next_forget = now + FORGET_CHECK_MS
        touched: dict[str, ClusterState] = {}
        notes: list[Notification] = []
        batch.each(lambda rec: self._handle(rec.topic, rec.value, now, touched, notes))
        self._tick(now, touched, notes)
        if notes:
            self._send(notes, now)
        if touched:
            self._store.save(touched.values(), self._payloads)

    def run(self, stop: threading.Event) -> None:
        """Step until `stop`, under POLICY: a step that fails on the broker or the database
        is retried after a backoff (doubling up to `backoff_s[1]`), from state reloaded from
        the store and the input re-read from the committed offsets. Raises OutageTooLong once
        failures have lasted `max_outage_s`; anything else raised is a bug and ends the loop."""
        self._loop.run(stop)

    def reset(self) -> None:
        """Rebuild the state from the store; the loop then goes back to the group's committed
        offsets (the beginning where a fresh group has committed nothing), never past a batch
        that was not saved."""
        self._next_forget = 0
        self._clusters = self._store.load()
        self._by_alert = {t.alert.alert_id: cid for cid, s in self._clusters.items()
                          for t in s.alerts}
        self._wakeups = {}
        for cid, state in self._clusters.items():
            self._schedule(cid, state)

    def close(self) -> None:
        self._consumer.close()
        # Bounded: stopping during an outage must not wait for the broker.
        close_producer(self._producer, CLOSE_S, "router")
