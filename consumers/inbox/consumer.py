"""The inbox consumer: `alerts.<hub>` -> SQL rows, rows committed before offsets.

Per batch: decode and check every record; insert the good ones in one transaction (a
notification id already stored is skipped, so a redelivery is a no-op); only then dead-letter
the bad ones and commit the offsets. If the database is down, nothing is committed: the
consumer seeks back to the batch's first offsets, waits (with back-off) and reads the same
records again, so an outage of any length loses nothing and keeps the consumer in its group.
If the database refuses the batch's data (RecordRefused: a value too long for a column, a
constraint), waiting cannot help: the batch is stored one record at a time and each record the
database refuses is dead-lettered with the reason, so one bad record never blocks the alerts
behind it. If the dead-letter topic cannot be written, nothing is committed either: the batch
is read again (stored rows are a no-op), so no refused record is lost.

One process may serve several hubs (`HubInboxes`): one consumer per hub, each authenticated as
that hub and in that hub's group, each on its own thread, all sharing the store.

Given an `AnswerDesk`, the same consumer also reads the hub's `reid-responses.<hub>`: answers to
its re-identification requests are checked, stored sealed and audited in the same batch, and
identities past their retention are dropped as it goes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from safehub import topics
from safehub.bus import commit_batches
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.answers import AnswerDesk, topic_hub
from safehub.consumers.inbox.store import InboxStore, RecordRefused
from safehub.errors import BrokerError, StoreError, ValidationError
from safehub.observability.watch import ServiceWatch
from safehub.schemas.codec import decode
from safehub.schemas.records import ReidResponse, RoutedAlert
from safehub.services.router.core import notification_id

log = logging.getLogger(__name__)

Clock = Callable[[], int]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 10.0


def topic_agency(topic: str, prefix: str) -> str:
    """The hub of an `alerts.<hub>` topic (its agency in the routing table's words)."""
    return topics.party_of(topic, topics.Family.ALERTS, prefix)


def check(routed: RoutedAlert, agency: str) -> None:
    """A record must be for the agency whose topic it came on, with a well-derived id."""
    if routed.receiver_agency != agency:
        raise ValidationError("receiver_agency", "differs from the topic's agency")
    expected = notification_id(routed.alert.alert_id, routed.receiver_agency,
                               routed.escalation_level)
    if routed.notification_id != expected:
        raise ValidationError("notification_id", "not derived from alert, receiver and level")


class InboxConsumer:
    def __init__(self, consumer: KafkaConsumer, store: InboxStore, deadletters: DeadLetterSink,
                 prefix: str, clock: Clock, retry: RetryPolicy = RetryPolicy(),
                 producer: KafkaProducer | None = None, answers: AnswerDesk | None = None,
                 expiry_every_ms: int = 5_000, watch: ServiceWatch | None = None,
                 part: str = "inbox") -> None:
        self._consumer = consumer
        self.watch = watch or ServiceWatch("inbox")
        self.part = part  # the hub this consumer serves, for the heartbeat and assignment
        self._answers = answers
        self._expiry_every_ms = expiry_every_ms
        self._next_expiry = 0
        self._producer = producer  # the dead letters', closed with the consumer if given
        self._store = store
        self._deadletters = deadletters
        self._prefix = prefix
        self._clock = clock
        self._retry = retry
        self._backoff = retry.initial_s
        self.stored = 0
        self.deadlettered = 0
        self.outages = 0

    @property
    def engine(self) -> Any:
        return self._store.engine

    def step(self, stop: threading.Event, timeout_ms: int = 500) -> int:
        """Poll once and process the batch; return how many records were consumed for good."""
        self._expire()
        batches: Mapping[TopicPartition, list[Any]] = self._consumer.poll(timeout_ms=timeout_ms)
        started = time.perf_counter()
        self.watch.polled(self.part, self._consumer, batches)
        if not batches:
            return 0
        good: list[tuple[RoutedAlert, bytes, Any]] = []
        answers: list[tuple[ReidResponse, Any]] = []
        bad: list[tuple[Any, Exception]] = []
        for tp, records in batches.items():
            answer_topic = self._answers is not None and self._is_answer_topic(tp.topic)
            for rec in records:
                try:
                    if answer_topic:
                        answers.append((decode(rec.value, ReidResponse), rec))
                        continue
                    routed = decode(rec.value, RoutedAlert)
                    check(routed, topic_agency(tp.topic, self._prefix))
                    good.append((routed, rec.value, rec))
                except ValidationError as exc:
                    bad.append((rec, exc))
        now = self._clock()
        consumed = len(good) + len(answers) + len(bad)
        try:
            inserted, refused = self._save(good, now)
            bad += refused
            bad += self._take_answers(answers, now)
        except (StoreError, BrokerError) as exc:
            # Nothing of this batch is committed: read it again once the database (or the
            # audit log) is back. Rows already stored make the second pass a no-op.
            self.outages += 1
            self._again(batches, stop, "cannot store this batch", exc)
            return 0
        try:
            for rec, error in bad:
                self._deadletters.send_record(rec, error)
        except BrokerError as exc:
            # Committing now would skip a refused record that is in no topic and no table.
            # A dead letter sent before the failure may be sent again: duplicates, never loss.
            self._again(batches, stop, "cannot dead-letter this batch", exc)
            return 0
        self._backoff = self._retry.initial_s
        # Rows are in; a redelivery after a failed commit is a no-op.
        commit_batches(self._consumer, batches, "inbox")
        self.stored += inserted
        self.deadlettered += len(bad)
        self._count(batches, good, bad, inserted, started)
        return consumed

    def _count(self, batches: Mapping[TopicPartition, list[Any]],
               good: list[tuple[RoutedAlert, bytes, Any]], bad: list[tuple[Any, Exception]],
               inserted: int, started: float) -> None:
        metrics = self.watch.metrics
        refused = {id(rec) for rec, _ in bad}
        unique = {r.notification_id: r for r, _, rec in good if id(rec) not in refused}
        if inserted == len(unique):
            for routed in unique.values():
                metrics.alert(routed.alert.tier.value, routed.receiver_agency)
        elif inserted:
            # Part of a redelivered batch was stored already, and the store does not say
            # which rows were new: their tier is not guessed.
            metrics.alert("unknown", self.part, inserted)
        for rec, error in bad:
            metrics.dead_letter(rec.topic, error)
        self.watch.processed(batches, started)

    def _save(self, good: list[tuple[RoutedAlert, bytes, Any]], now: int
              ) -> tuple[int, list[tuple[Any, Exception]]]:
        """Store the batch; if the database refuses its data, store it record by record and
        return the refused records (as consumed records, for the dead letters)."""
        if not good:
            return 0, []
        try:
            return self._store.save([(r, raw) for r, raw, _ in good], now), []
        except RecordRefused:
            pass
        inserted = 0
        refused: list[tuple[Any, Exception]] = []
        for routed, raw, rec in good:
            try:
                inserted += self._store.save([(routed, raw)], now)
            except RecordRefused as exc:
                refused.append((rec, exc))
        return inserted, refused

    def _again(self, batches: Mapping[TopicPartition, list[Any]], stop: threading.Event,
               what: str, exc: Exception) -> None:
        """Rewind to the batch's first records and wait (with back-off) before reading it again."""
        log.warning("inbox %s (%s); retrying in %.1fs", what, exc, self._backoff)
        for tp, records in batches.items():
            self._consumer.seek(tp, records[0].offset)
        stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self._retry.max_s)

    def _is_answer_topic(self, topic: str) -> bool:
        try:
            topic_hub(topic, self._prefix)
        except ValidationError:
            return False
        return True

    def _take_answers(self, answers: list[tuple[ReidResponse, Any]], now: int
                      ) -> list[tuple[Any, Exception]]:
        if not answers or self._answers is None:
            return []
        refused: list[tuple[Any, Exception]] = []
        for response, rec in answers:
            try:
                self._answers.take(response, rec.value, now)
            except ValidationError as exc:
                refused.append((rec, exc))
        # Delivered (and refused) answers are in the audit log before their offsets commit.
        self._answers.audit.flush()
        return refused

    def _expire(self) -> None:
        if self._answers is None:
            return
        now = self._clock()
        if now < self._next_expiry:
            return
        self._next_expiry = now + self._expiry_every_ms
        try:
            self._answers.expire(now)
        except (StoreError, BrokerError) as exc:
            log.warning("expiring re-identification answers failed (%s); next round retries",
                        exc)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step(stop)
            except BrokerError as exc:
                log.warning("%s; retrying", exc)
                self.watch.heartbeat.beat(self.part)  # waiting for the broker, not wedged
                stop.wait(self._retry.initial_s)

    def close(self) -> None:
        self._consumer.close()
        if self._producer is not None:
            self._producer.close()


class HubInboxes:
    """Several hubs' inbox consumers in one process, one thread each.

    An unexpected error on any thread stops them all and is raised by `run`, so the process
    exits with it rather than go on serving some hubs and silently not others.
    """

    def __init__(self, inboxes: Mapping[str, InboxConsumer]) -> None:
        self.inboxes = dict(inboxes)
        self._failures: list[BaseException] = []

    def _serve(self, inbox: InboxConsumer, stop: threading.Event) -> None:
        try:
            inbox.run(stop)
        except BaseException as exc:
            self._failures.append(exc)
            stop.set()
            raise

    def run(self, stop: threading.Event) -> None:
        threads = [threading.Thread(target=self._serve, args=(inbox, stop), daemon=True,
                                    name=f"inbox-{hub}")
                   for hub, inbox in self.inboxes.items()]
        for t in threads:
            t.start()
        stop.wait()
        for t in threads:
            t.join()
        if self._failures:
            raise self._failures[0]

    def close(self) -> None:
        for inbox in self.inboxes.values():
            inbox.close()
