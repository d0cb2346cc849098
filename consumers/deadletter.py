"""The dead-letter path every consumer uses: a bad record is kept, with its reason and origin.

The raw value goes to `deadletter` unchanged (so an operator can inspect or replay it by hand),
keyed by the original key, with headers naming where it came from and why it was refused. `send`
blocks until the broker has acknowledged the dead letter; only then may the consumer commit the
offset, so a bad record never stops a consumer and never vanishes.

Error messages are ours (ValidationError says field and rule, never a value); for any other
exception only its class is kept, because a library's message may quote the data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from kafka import KafkaProducer

from safehub.bus import Delivery, send_and_confirm
from safehub.errors import SafehubError, ValidationError
from safehub.schemas.records import DeadLetter

log = logging.getLogger(__name__)

HEADER_SOURCE_TOPIC = "safehub.source.topic"
HEADER_SOURCE_PARTITION = "safehub.source.partition"
HEADER_SOURCE_OFFSET = "safehub.source.offset"
HEADER_ERROR_CLASS = "safehub.error.class"
HEADER_ERROR_MESSAGE = "safehub.error.message"
HEADER_AT = "safehub.deadlettered.at"
# Kafka refuses a record with neither key nor value, so a keyless null value is sent as empty
# bytes with this header, which keeps "null" and "empty" apart.
HEADER_NULL_VALUE = "safehub.source.null-value"
MAX_MESSAGE_CHARS = 512


class ConsumedRecord(Protocol):
    """What a dead letter needs of a consumed record (kafka-python's or the correlator's)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def error_text(error: BaseException) -> str:
    """What may be said about an error without risking an identifier: never a raw value."""
    if isinstance(error, SafehubError):
        text = str(error)
    else:
        text = f"{type(error).__name__} (message withheld: not a safehub error)"
    if not (text.isascii() and text.isprintable()):  # for ASCII, exactly " " to "~"
        text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return text[:MAX_MESSAGE_CHARS]


Reason = tuple[tuple[str, bytes], tuple[str, bytes]]


def reason_headers(error: BaseException) -> Reason:
    """The headers that say why a record was refused: alike for every record refused for the
    same reason, so a sender of many (the correlator, under a flood) makes them once."""
    return ((HEADER_ERROR_CLASS, type(error).__name__.encode("ascii")),
            (HEADER_ERROR_MESSAGE, error_text(error).encode("ascii")))


def headers_for(source_topic: str, partition: int, offset: int, error: BaseException,
                at_ms: int | None = None, reason: Reason | None = None,
                ) -> list[tuple[str, bytes]]:
    """`reason`: `reason_headers(error)`, if already made."""
    headers = [
        (HEADER_SOURCE_TOPIC, source_topic.encode("utf-8")),
        (HEADER_SOURCE_PARTITION, str(partition).encode("ascii")),
        (HEADER_SOURCE_OFFSET, str(offset).encode("ascii")),
        *(reason or reason_headers(error)),
    ]
    if at_ms is not None:
        headers.append((HEADER_AT, str(at_ms).encode("ascii")))
    return headers


def dead_letter_from(value: bytes | None, headers: Sequence[tuple[str, bytes]],
                     timestamp_ms: int) -> DeadLetter:
    """Read a message consumed from `deadletter` back into a DeadLetter record."""
    found = dict(headers)
    try:
        return DeadLetter(
            source_topic=found[HEADER_SOURCE_TOPIC].decode("utf-8"),
            partition=int(found[HEADER_SOURCE_PARTITION]),
            offset=int(found[HEADER_SOURCE_OFFSET]),
            error_class=found[HEADER_ERROR_CLASS].decode("ascii"),
            error_message=found[HEADER_ERROR_MESSAGE].decode("ascii"),
            at=int(found.get(HEADER_AT, str(timestamp_ms).encode("ascii"))),
            raw=b"" if value is None else value,
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("headers", "not a safehub dead letter", type(exc).__name__) from None


class DeadLetterSink:
    """Writes refused records to the dead-letter topic and waits for the acknowledgement."""

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 60.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    @property
    def topic(self) -> str:
        return self._topic

    def send_record(self, record: ConsumedRecord, error: Exception,
                    at_ms: int | None = None) -> Delivery:
        """Dead-letter a consumed record and say so in the log (topic, partition, offset)."""
        delivery = self.send(record.value, record.key, record.topic, record.partition,
                             record.offset, error, at_ms)
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition,
                    record.offset, error_text(error))
        return delivery

    def send(self, raw_value: bytes | None, raw_key: bytes | None, source_topic: str,
             partition: int, offset: int, error: Exception, at_ms: int | None = None) -> Delivery:
        """Dead-letter one record; returns once the broker acknowledged it (BrokerError if not).
        What is sent: `dead_letter_message`."""
        key, value, headers = dead_letter_message(raw_value, raw_key, source_topic, partition,
                                                  offset, error, at_ms)
        # kafka-python sends a None value as a Kafka null; the bus helper is typed for bytes.
        return send_and_confirm(self._producer, self._topic, value,  # type: ignore[arg-type]
                                key=key, headers=headers, timeout=self._timeout_s)


def dead_letter_message(raw_value: bytes | None, raw_key: bytes | None, source_topic: str,
                        partition: int, offset: int, error: BaseException,
                        at_ms: int | None = None, reason: Reason | None = None,
                        ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The (key, value, headers) of a dead letter, for a sender of its own (the correlator
    sends its dead letters in the transaction of the batch's outputs). A null value stays null
    (a tombstone is kept as one); the original key is kept so the dead letter can be matched
    with the other records of the same linkage block."""
    headers = headers_for(source_topic, partition, offset, error, at_ms, reason)
    if raw_value is None:
        headers.append((HEADER_NULL_VALUE, b"true"))
    value = b"" if raw_value is None and raw_key is None else raw_value
    return raw_key, value, headers
