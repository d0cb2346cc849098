"""The inbox consumer: `alerts.<hub>` -> SQL rows, rows committed before offsets.

Per batch (one step of safehub.consuming's loop, under POLICY): decode and check every record;
insert the good ones in one transaction (a notification id already stored is skipped, so a
redelivery is a no-op); only then dead-letter the bad ones and commit the offsets. If the
database is down, nothing is committed: the consumer seeks back to the batch's first offsets,
waits (with back-off) and reads the same records again, so an outage of any length loses
nothing and keeps the consumer in its group.
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

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from safehub import topics
from safehub.bus import close_producer
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.answers import AnswerDesk, topic_hub
from safehub.consumers.inbox.store import InboxStore, RecordRefused
from safehub.consuming import (
    EXIT_TEMPORARY,
    Action,
    Backoff,
    Batch,
    ConsumeLoop,
    ErrorPolicy,
    Rewind,
    Rule,
)
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


# A record that is not a well-formed alert for this hub, or whose data the database refuses
# (waiting cannot help), is dead-lettered. An outage of the database or the broker (the audit
# log, the dead letters, the offset commit) is waited out for as long as it lasts: the batch is
# re-read from its first offsets. An error the client library raised untranslated (say, an ACL
# taken away, or a socket error kafka-python let escape) stops the inbox with 75, to be
# restarted with fresh clients; anything else is a bug (70).
POLICY = ErrorPolicy(
    "inbox",
    (Rule((ValidationError, RecordRefused), Action.DEAD_LETTER),
     Rule((BrokerError, StoreError), Action.RETRY),
     Rule((KafkaError, OSError), Action.STOP, EXIT_TEMPORARY)),
    Backoff(RetryPolicy().initial_s, RetryPolicy().max_s),
    max_outage_s=None,
    rewind=Rewind.BATCH,
)


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
        self.stored = 0
        policy = dataclasses.replace(
            POLICY, service="inbox" if part == "inbox" else f"inbox {part}",
            backoff=Backoff(retry.initial_s, retry.max_s))
        self._loop = ConsumeLoop(consumer, self, policy, deadletters, self.watch, part, log)

    @property
    def engine(self) -> Any:
        return self._store.engine

    @property
    def deadlettered(self) -> int:
        return self._loop.deadlettered

    @property
    def outages(self) -> int:
        """Failed attempts at a batch (each one read again after a wait)."""
        return self._loop.failures

    def step(self, stop: threading.Event, timeout_ms: int = 500) -> int:
        """Poll once and process the batch; return how many records were consumed for good."""
        self._expire()
        return self._loop.step(stop, timeout_ms)

    def handle(self, batch: Batch) -> None:
        """Store the batch's alerts and answers; refuse what is bad or what the database
        refuses. The loop then dead-letters the refused and commits."""
        if not len(batch):
            return
        good: list[tuple[RoutedAlert, bytes, Any]] = []
        answers: list[tuple[ReidResponse, Any]] = []

        def take(rec: Any) -> None:
            if self._answers is not None and self._is_answer_topic(rec.topic):
                answers.append((decode(rec.value, ReidResponse), rec))
                return
            routed = decode(rec.value, RoutedAlert)
            check(routed, topic_agency(rec.topic, self._prefix))
            good.append((routed, rec.value, rec))

        batch.each(take)
        now = self._clock()
        inserted = self._save(good, now, batch)
        self._take_answers(answers, now, batch)
        self.stored += inserted
        self._count(good, batch, inserted)

    def reset(self) -> None:
        """Nothing held in memory across batches: a re-read batch starts afresh."""

    def _count(self, good: list[tuple[RoutedAlert, bytes, Any]], batch: Batch,
               inserted: int) -> None:
        metrics = self.watch.metrics
        refused = {id(rec) for rec, _ in batch.refused}
        unique = {r.notification_id: r for r, _, rec in good if id(rec) not in refused}
        if inserted == len(unique):
            for routed in unique.values():
                metrics.alert(routed.alert.tier.value, routed.receiver_agency)
        elif inserted:
            # Part of a redelivered batch was stored already, and the store does not say
            # which rows were new: their tier is not guessed.
            metrics.alert("unknown", self.part, inserted)

    def _save(self, good: list[tuple[RoutedAlert, bytes, Any]], now: int, batch: Batch) -> int:
        """Store the batch; if the database refuses its data, store it record by record, the
        policy refusing each record the database refuses."""
        if not good:
            return 0
        try:
            return self._store.save([(r, raw) for r, raw, _ in good], now)
        except RecordRefused:
            pass
        inserted = 0
        row = {id(rec): (routed, raw) for routed, raw, rec in good}

        def save_one(rec: Any) -> None:
            nonlocal inserted
            inserted += self._store.save([row[id(rec)]], now)

        batch.each(save_one, [rec for _, _, rec in good])
        return inserted

    def _is_answer_topic(self, topic: str) -> bool:
        try:
            topic_hub(topic, self._prefix)
        except ValidationError:
            return False
        return True

    def _take_answers(self, answers: list[tuple[ReidResponse, Any]], now: int,
                      batch: Batch) -> None:
        if not answers or self._answers is None:
            return
        desk = self._answers
        response_of = {id(rec): response for response, rec in answers}
        batch.each(lambda rec: desk.take(response_of[id(rec)], rec.value, now),
                   [rec for _, rec in answers])
        # Delivered (and refused) answers are in the audit log before their offsets commit.
        desk.audit.flush()

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
        """Step until `stop`; raises what POLICY stops on (ServiceStopped, or a bug)."""
        while not stop.is_set():
            self.step(stop)

    def close(self) -> None:
        self._consumer.close()
        if self._producer is not None:
            # Bounded, as the router's: stopping must not wait on a broker that is away.
            close_producer(self._producer, 10.0, "inbox")


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
