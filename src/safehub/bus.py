"""kafka-python clients with the project's delivery settings, and nothing else.

Producers: acks=all, idempotence on, a delivery report for every record (`send_and_confirm`).
Consumers: raw bytes in, manual commits, so a consumer validates in our code, dead-letters what
fails and only then commits (see safehub.consumers.deadletter).
Every client authenticates as the principal of its `KafkaConnection` (SASL_SSL, SCRAM-SHA-512):
the connection settings come from there and nowhere else.

This is the project's one client layer (issue 23): every Kafka client is built here, the
aiokafka ones too (the audit reader, the correlator's transactional outputs), and
tests/unit/test_client_layer.py fails on a construction anywhere else. The one client built
elsewhere is faust's own consumer in the correlator, which faust makes from the settings that
`KafkaConnection.faust()` gives its app. `admin_with` is the deliberate way around a principal's
connection: the launcher's node identity, and the attack tests' wrong passwords and plaintext.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from safehub import kafka_python_fixes
from safehub.connection import KafkaConnection
from safehub.errors import BrokerError

if TYPE_CHECKING:
    # aiokafka is imported only by the builders that make its clients: most processes that
    # use this module never load it.
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

kafka_python_fixes.apply()

Headers = Sequence[tuple[str, bytes]]
SECRET_SETTINGS = ("sasl_plain_password",)


def _redacted(args: object) -> object:
    if isinstance(args, Mapping) and any(k in args for k in SECRET_SETTINGS):
        return {k: "<redacted>" if k in SECRET_SETTINGS else v for k, v in args.items()}
    return args


class _NoSecretSettings(logging.Filter):
    """kafka-python's admin client logs its whole configuration at DEBUG, the SASL password
    included (the privacy canary found it): the password is blanked before any handler sees
    the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) for a in record.args)
        else:
            record.args = _redacted(record.args)  # type: ignore[assignment]
        return True


logging.getLogger("kafka.admin.client").addFilter(_NoSecretSettings())
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A broker acknowledgement: the record is durably on this topic, partition and offset."""

    topic: str
    partition: int
    offset: int


# A send fails once the producer's delivery timeout has passed, so records still unsettled this
# long after it mean a producer that has stopped working (kafka-python 3.0.12 under broker
# kills: a router waiting 8 minutes, and fault run M's agencies with 1,133 records unsettled
# after 240 s).
WEDGED_AFTER_DELIVERY_S = 30.0


def wedged_after_s(producer: KafkaProducer) -> float:
    """How long a flush may wait before the producer is taken to have stopped working."""
    return float(producer.config["delivery_timeout_ms"]) / 1000 + WEDGED_AFTER_DELIVERY_S


def discard_stuck(producer: KafkaProducer) -> None:
    """Close a producer that stopped settling records, on a thread of its own: its IO thread
    may be what is stuck, so it is never waited for. Its unsent records fail the close
    (kafka-python raises KafkaTimeoutError at once with no time to flush): said in one line,
    not as a thread's traceback."""

    def close() -> None:
        try:
            producer.close(timeout=0)
        except KafkaError as exc:
            log.warning("a stuck producer closed with its records unsent: %s", exc)

    threading.Thread(target=close, daemon=True, name="safehub-stuck-producer").start()


def make_producer(kafka: KafkaConnection, client_id: str, **overrides: Any) -> KafkaProducer:
    settings: dict[str, Any] = {
        **kafka.kafka_python(),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "batch_size": 64 * 1024,
        "compression_type": None,
        "request_timeout_ms": 30_000,
        "delivery_timeout_ms": 120_000,
    }
    settings.update(overrides)
    try:
        return KafkaProducer(**settings)
    except KafkaError as exc:
        raise BrokerError(f"cannot connect a producer to {kafka.bootstrap} as "
                          f"{kafka.principal}: {exc}") from exc


def make_consumer(
    kafka: KafkaConnection,
    group_id: str | None,
    topics: Iterable[str] = (),
    *,
    client_id: str = "safehub",
    from_beginning: bool = True,
    **overrides: Any,
) -> KafkaConsumer:
    settings: dict[str, Any] = {
        **kafka.kafka_python(),
        "group_id": group_id,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest" if from_beginning else "latest",
        "isolation_level": "read_committed",
        "max_poll_records": 2000,
        "fetch_max_bytes": 50 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
    }
    settings.update(overrides)
    try:
        consumer = KafkaConsumer(**settings)
        names = list(topics)
        if names:
            consumer.subscribe(names)
        return consumer
    except KafkaError as exc:
        raise BrokerError(f"cannot connect a consumer to {kafka.bootstrap} as "
                          f"{kafka.principal}: {exc}") from exc


def make_admin(kafka: KafkaConnection, client_id: str = "safehub-admin",
               **overrides: Any) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**{**kafka.kafka_python(), "client_id": client_id,
                                   "request_timeout_ms": 30_000, **overrides})
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap} as {kafka.principal}: "
                          f"{exc}") from exc


def admin_with(settings: Mapping[str, Any]) -> KafkaAdminClient:
    """An admin client from explicit kafka-python settings, not a principal's connection: the
    launcher's node identity (mutual TLS, before any SCRAM credential exists), and clients
    meant to be refused (a wrong password, plaintext). kafka-python's own errors come through
    unchanged, since those callers judge them."""
    return KafkaAdminClient(**settings)


def make_aio_producer(kafka: KafkaConnection, client_id: str,
                      **overrides: Any) -> AIOKafkaProducer:
    """An aiokafka producer for this connection, acks=all. Idempotence and transactions are
    the caller's to ask for (a transactional id needs idempotence, and a principal with no
    write right anywhere is refused an idempotent producer id)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**{**kafka.aiokafka(), "client_id": client_id, "acks": "all",
                               **overrides})


def make_aio_consumer(kafka: KafkaConnection, client_id: str, group_id: str | None = None,
                      **overrides: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer for this connection with make_consumer's delivery settings: manual
    commits, committed records only, large fetches. Not subscribed: callers assign."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(**{
        **kafka.aiokafka(),
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "fetch_max_bytes": 50 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        **overrides,
    })


def close_producer(producer: KafkaProducer, timeout_s: float, owner: str) -> None:
    """Close `producer`, waiting at most `timeout_s` for what it still holds.

    kafka-python raises when the wait runs out (a broker away, or a client that has stopped
    working, which is when a service stops itself); that must not replace the exit code the
    service chose with a traceback and exit 1. What the producer held was not acknowledged, so
    its service did not commit the input behind it: it is read and sent again at the next
    start."""
    try:
        producer.close(timeout=timeout_s)
    except KafkaError as exc:
        log.warning(
            "%s: its producer did not close within %.0f s (%s); what it held is sent again "
            "after the restart", owner, timeout_s, exc)


def send_and_confirm(
    producer: KafkaProducer,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    headers: Headers | None = None,
    timeout: float = 60.0,
) -> Delivery:
    """Send one record and wait for its delivery report."""
    try:
        meta = producer.send(topic, value=value, key=key, headers=list(headers or [])).get(timeout)
    except KafkaError as exc:
        raise BrokerError(f"record to {topic} not acknowledged: {exc}") from exc
    return Delivery(meta.topic, meta.partition, meta.offset)


def send_all(
    producer: KafkaProducer,
    records: Iterable[tuple[str, bytes | None, bytes, Headers | None]],
    timeout: float = 120.0,
) -> list[Delivery]:
    """Send many (topic, key, value, headers) records pipelined; return a report for each.

    Raises BrokerError naming how many were not acknowledged; those reported before the
    failure are durable.
    """
    futures = [
        producer.send(topic, key=key, value=value, headers=list(headers or []))
        for topic, key, value, headers in records
    ]
    producer.flush(timeout)
    reports: list[Delivery] = []
    failed = 0
    first_error: Exception | None = None
    for fut in futures:
        try:
            meta = fut.get(0)
            reports.append(Delivery(meta.topic, meta.partition, meta.offset))
        except KafkaError as exc:
            failed += 1
            first_error = first_error or exc
    if failed:
        raise BrokerError(f"{failed} of {len(futures)} records not acknowledged: {first_error}")
    return reports


def commit_batches(
    consumer: KafkaConsumer, batches: Mapping[TopicPartition, Sequence[Any]], who: str
) -> None:
    """Commit the offsets after the last record of each polled partition.

    Call it only once everything the records caused is stored or acknowledged: a redelivery
    after a failed commit is then a no-op for an idempotent sink. The consumer's position may
    be past the last record: over the marker that ends a transaction (the correlator writes
    `correlated` in transactions), which is committed past too, so that a group that has read
    everything has committed the topic's end offset.

    The position is the consumer's own, asked with no wait: kafka-python 3.0.12's `position`
    otherwise first re-validates it with the partition's new leader after a broker's loss and
    waits for that without a bound (`timeout_ms=None`), on the path every batch takes.
    """
    if not batches:
        return
    offsets = {tp: OffsetAndMetadata(_past(consumer, tp, records), "", -1)
               for tp, records in batches.items()}
    try:
        consumer.commit(offsets)
    except KafkaError as exc:
        raise BrokerError(f"{who} offset commit failed: {type(exc).__name__}") from exc


def _past(consumer: KafkaConsumer, tp: TopicPartition, records: Sequence[Any]) -> int:
    after = int(records[-1].offset) + 1
    position = consumer.position(tp, timeout_ms=0)
    return after if position is None else max(after, int(position))
