"""The publisher: an agency's records in, pseudonymised contract events out to `ingress.<agency>`.

Per batch: validate and normalise each record, derive the batch's match keys and linkage blocks
in a few calls of the keyed PRF (the key service, or version 1's HMAC; see keying.py), the next
batch's while this one is delivered; then per record: record the
re-identification handle in the agency's vault (committed first, so every handle that leaves is
resolvable), build the event, check it against the contract as the hub will, encode it with the
contract's codec, and send it keyed by the linkage block with acks=all and idempotence on
(safehub.bus). Every record gets an outcome: a delivery report (topic, partition, offset), or
the field and rule that made it unusable, or the broker error that kept it from being
acknowledged. The event id is derived from the agency and its record reference, so a re-sent
export puts nothing new in front of the hub.

Nothing here logs or raises with an identifier in it: outcomes name fields and rules only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from safehub import topics
from safehub.bus import discard_stuck, wedged_after_s
from safehub.clock import wall_clock_ms
from safehub.errors import BrokerError, ConfigError, SafehubError, ValidationError
from safehub.producers.keying import Keying, as_keying
from safehub.producers.linkagekey import LinkageKey
from safehub.producers.matchkeys import message_key
from safehub.producers.pseudonymisation import Prepared, event_id, prepare_many, to_event
from safehub.producers.records import AgencyRecord, MissingEpisodeRecord, SignRecord
from safehub.producers.vault import Assignment, Vault
from safehub.schemas import codec
from safehub.schemas.validation import validate_ingress
from safehub.schemas.vocabulary import Sector

log = logging.getLogger(__name__)

AGENCY_ID = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
DEFAULT_BATCH = 2000


def ingress_topic(agency_id: str, prefix: str = "") -> str:
    return topics.ingress(prefix, agency_id)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The broker acknowledged the event: it is durably at topic/partition/offset."""

    record_ref: str
    event_id: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """The record broke a rule; nothing was sent. Names the field and rule, never the value."""

    record_ref: str | None
    field: str
    rule: str


@dataclass(frozen=True, slots=True)
class Undelivered:
    """The event was built but the broker did not acknowledge it in time; send it again."""

    record_ref: str
    event_id: str
    reason: str


Outcome = DeliveryReport | Rejected | Undelivered


FIRST_BATCH = 250


def _batches(items: Iterable[AgencyRecord], size: int) -> Iterator[list[AgencyRecord]]:
    """Batches that start small and double up to `size`: the keys of the next batch are
    derived while this one is sent, and nothing is sent before the first batch's keys exist,
    so a small first batch starts the overlap early (with the key service, deriving a batch
    takes about four times as long as sending it: most exports are one or two batches)."""
    it = iter(items)
    step = min(size, FIRST_BATCH)
    while chunk := list(islice(it, step)):
        yield chunk
        step = min(size, step * 2)


class Publisher:
    """One agency's publisher. The producer and vault are owned by the caller."""

    def __init__(
        self,
        producer: KafkaProducer,
        vault: Vault,
        key: LinkageKey | Keying,
        agency_id: str,
        sector: Sector,
        topic_prefix: str = "",
        batch_size: int = DEFAULT_BATCH,
        clock_ms: Callable[[], int] = wall_clock_ms,
        renew: Callable[[], KafkaProducer] | None = None,
    ) -> None:
        if len(agency_id) > 64 or AGENCY_ID.fullmatch(agency_id) is None:
            raise ConfigError("agency id must be a lower-case slug such as police-west-yorkshire")
        self.producer = producer
        # Makes a new producer when this one stops settling records; without it, the caller's
        # producer is kept and every later batch may wait out the bound too.
        self._renew = renew
        self.vault = vault
        self.keying = as_keying(key)
        self.agency_id = agency_id
        self.sector = sector
        self.topic = ingress_topic(agency_id, topic_prefix)
        self.batch_size = batch_size
        self._clock_ms = clock_ms

    def _replace_wedged_producer(self, unsettled: int, bound_s: float) -> None:
        log.error("%d record(s) to %s not settled within %.0f s: the producer is stuck%s",
                  unsettled, self.topic, bound_s,
                  "; replacing it" if self._renew is not None else "")
        if self._renew is None:
            return
        stuck, self.producer = self.producer, self._renew()
        discard_stuck(stuck)

    # -- single records -------------------------------------------------------------------
    def publish(self, sign: SignRecord) -> DeliveryReport:
        """Publish one warning sign and wait for its delivery report.

        Raises ValidationError (field, rule) for an unusable record, BrokerError if unacknowledged.
        """
        return self._one(sign)

    def publish_missing_episode(self, episode: MissingEpisodeRecord) -> DeliveryReport:
        return self._one(episode)

    def _one(self, record: AgencyRecord) -> DeliveryReport:
        (outcome,) = self.publish_many([record])
        if isinstance(outcome, Rejected):
            raise ValidationError(outcome.field, outcome.rule)
        if isinstance(outcome, Undelivered):
            raise BrokerError(f"event not acknowledged by the broker: {outcome.reason}")
        return outcome

    # -- batches --------------------------------------------------------------------------
    def publish_many(
        self,
        records: Iterable[AgencyRecord],
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Publish all records, pipelined in batches; one outcome per record, in input order.

        A rejected record does not stop the others. `on_outcome` is called for each outcome as
        soon as it is known (a progress bar, a checkpoint).
        """
        outcomes: list[Outcome] = []

        def emit(done: list[Outcome]) -> None:
            for outcome in done:
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

        # The keys of the next batch are derived while this one is put in the vault, encoded
        # and delivered: with the key service, derivation is mostly waiting on the service and
        # on libsodium, which both run outside this interpreter's lock.
        with ThreadPoolExecutor(1, thread_name_prefix="safehub-keys") as keys:
            ahead: tuple[list[AgencyRecord], Future[list[Prepared | ValidationError]]] | None
            ahead = None
            for batch in _batches(records, self.batch_size):
                derived = keys.submit(prepare_many, batch, self.agency_id, self.keying)
                if ahead is not None:
                    emit(self._batch(*ahead))
                ahead = (batch, derived)
            if ahead is not None:
                emit(self._batch(*ahead))
        return outcomes

    def _batch(self, batch: Sequence[AgencyRecord],
               derived: Future[list[Prepared | ValidationError]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(batch)
        prepared: list[tuple[int, Prepared]] = []
        try:
            results = derived.result()
        except SafehubError as exc:
            # The key service refused (quota, a destroyed epoch) or could not be reached:
            # nothing of this batch was sent or put in the vault; it can be sent again.
            reason = f"keys not derived: {type(exc).__name__}"
            status = getattr(exc, "status", None)
            if status is not None:
                reason += f" {status}"
            log.warning("batch of %d to %s: %s", len(batch), self.topic, reason)
            return [Undelivered(r.record_ref, event_id(self.agency_id, r.record_ref.strip())
                                if r.record_ref and r.record_ref.strip() else "", reason)
                    for r in batch]
        for i, (record, result) in enumerate(zip(batch, results, strict=True)):
            if isinstance(result, ValidationError):
                outcomes[i] = Rejected(record.record_ref or None, result.field, result.rule)
            else:
                prepared.append((i, result))
        handles = self.vault.assign(self.agency_id, [
            Assignment(p.person_key, p.record.record_ref.strip(), p.event_id) for _, p in prepared
        ])
        now_ms = self._clock_ms()
        pending: list[tuple[int, Prepared, Any]] = []
        for (i, p), handle in zip(prepared, handles, strict=True):
            try:
                event = to_event(p, self.agency_id, self.sector, None, handle)
                validate_ingress(event, self.agency_id, now_ms)
                value = codec.encode(event)
            except ValidationError as exc:
                outcomes[i] = Rejected(p.record.record_ref, exc.field, exc.rule)
                continue
            try:
                future = self.producer.send(
                    self.topic, key=message_key(p.linkage_block), value=value
                )
            except KafkaError as exc:
                outcomes[i] = Undelivered(p.record.record_ref, p.event_id, type(exc).__name__)
                continue
            pending.append((i, p, future))
        # Each record's own delivery.timeout.ms should settle it (acknowledged or failed) before
        # flush returns; a record still unsettled past that and a margin is reported undelivered,
        # to be sent again (the correlator drops a copy that arrived after all).
        bound_s = wedged_after_s(self.producer)
        try:
            self.producer.flush(bound_s)
        except KafkaTimeoutError:
            self._replace_wedged_producer(sum(1 for *_, f in pending if not f.is_done), bound_s)
        for i, p, future in pending:
            if not future.is_done:
                outcomes[i] = Undelivered(p.record.record_ref, p.event_id,
                                          f"not settled within {bound_s:.0f} s")
                continue
            try:
                meta = future.get(0)
            except KafkaError as exc:
                outcomes[i] = Undelivered(p.record.record_ref, p.event_id, type(exc).__name__)
                continue
            outcomes[i] = DeliveryReport(p.record.record_ref, p.event_id, meta.topic,
                                         meta.partition, meta.offset)
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(batch)
        failed = sum(1 for o in done if not isinstance(o, DeliveryReport))
        log.debug("batch of %d to %s: %d acknowledged, %d not", len(batch), self.topic,
                  len(batch) - failed, failed)
        return done
