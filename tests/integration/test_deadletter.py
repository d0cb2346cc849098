"""The dead-letter path on the real broker: 1% malformed events among 10,000 on an ingress
topic; every malformed one lands in `deadletter` with its reason and origin, and every good one
is processed."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from safehub.bus import make_consumer, make_producer, send_all
from safehub.consumers.deadletter import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_NULL_VALUE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    DeadLetterSink,
    dead_letter_from,
)
from safehub.errors import ValidationError
from safehub.samples.records import T0, hex32, sign_event, subject
from safehub.schemas import codec
from safehub.schemas.records import WarningSignEvent
from safehub.schemas.validation import agency_from_topic, validate_ingress

pytestmark = pytest.mark.integration

AGENCY = "police-west-yorkshire"
NOW = T0 + 10 * 86_400_000
TOTAL = 10_000


def malformed(i: int) -> tuple[bytes | None, str]:
    """A malformed value of one of several kinds, and the field its error must name."""
    good = codec.encode(sign_event(event_id=hex32(10**6 + i)))
    kinds = [
        (good[: len(good) // 2], WarningSignEvent.__name__),
        (b"", "value"),
        (None, "value"),
        (b"\x00\x01" + good[2:], "value"),
        (good + b"\x00", WarningSignEvent.__name__),
        (codec.encode(sign_event(event_id=hex32(10**6 + i), agency_id="school-x")), "agency_id"),
        (codec.encode(sign_event(event_id=hex32(10**6 + i), occurred_at=NOW + 86_400_000,
                                 reported_at=NOW + 86_400_000)), "occurred_at"),
        (codec.encode(sign_event(event_id=hex32(10**6 + i),
                                 subject=subject(age_years=40))), "subject.age_years"),
    ]
    return kinds[i % len(kinds)]


def test_malformed_events_are_deadlettered_and_good_ones_processed(
        kafka, topic_names, create_topics_fn):
    prefix = topic_names("")
    ingress, deadletter = create_topics_fn(prefix + f"ingress.{AGENCY}", prefix + "deadletter",
                                           partitions=3)
    producer = make_producer(kafka, "test-deadletter-producer")
    base = sign_event(subject=subject(linkage_block=97))  # a block producers make
    records: list[tuple[str, bytes | None, bytes | None, None]] = []
    expected_bad: dict[int, str] = {}  # index in send order -> field
    good_ids: set[str] = set()
    for i in range(TOTAL):
        key = (i % 97).to_bytes(4, "big")
        if i % 100 == 42:
            value, field = malformed(i)
            expected_bad[i] = field
        else:
            event = replace(base, event_id=hex32(i), occurred_at=T0 + i, reported_at=T0 + i)
            value = codec.encode(event)
            good_ids.add(event.event_id)
        records.append((ingress, key, value, None))
    reports = send_all(producer, records)  # type: ignore[arg-type]
    bad_origins = {(reports[i].partition, reports[i].offset): f for i, f in expected_bad.items()}
    assert len(bad_origins) == TOTAL // 100

    # A consumer as every service writes one: decode, validate, dead-letter, then commit.
    sink = DeadLetterSink(producer, deadletter)
    consumer = make_consumer(kafka, topic_names("group"), [ingress])
    processed: set[str] = set()
    deadlettered = 0
    seen = 0
    deadline = time.monotonic() + 120
    while seen < TOTAL and time.monotonic() < deadline:
        for records_ in consumer.poll(timeout_ms=500).values():
            for msg in records_:
                seen += 1
                try:
                    event = codec.decode(msg.value, WarningSignEvent)
                    validate_ingress(event, agency_from_topic(msg.topic, prefix), NOW)
                except ValidationError as err:
                    sink.send(msg.value, msg.key, msg.topic, msg.partition, msg.offset, err)
                    deadlettered += 1
                    continue
                processed.add(event.event_id)
        consumer.commit()
    consumer.close()
    assert seen == TOTAL
    assert processed == good_ids
    assert deadlettered == len(bad_origins)

    reader = make_consumer(kafka, topic_names("dl-reader"), [deadletter])
    letters = []
    deadline = time.monotonic() + 60
    while len(letters) < len(bad_origins) and time.monotonic() < deadline:
        for records_ in reader.poll(timeout_ms=500).values():
            letters.extend(records_)
    reader.close()
    producer.close()
    assert len(letters) == len(bad_origins)

    found = {}
    for msg in letters:
        headers = dict(msg.headers)
        assert headers[HEADER_SOURCE_TOPIC].decode() == ingress
        assert headers[HEADER_ERROR_CLASS] == b"ValidationError"
        origin = (int(headers[HEADER_SOURCE_PARTITION]), int(headers[HEADER_SOURCE_OFFSET]))
        message = headers[HEADER_ERROR_MESSAGE].decode()
        found[origin] = message
        letter = dead_letter_from(msg.value, msg.headers, msg.timestamp)
        assert codec.decode(codec.encode(letter), type(letter)) == letter  # envelope schema
        if HEADER_NULL_VALUE in headers:
            assert msg.value is None
    assert set(found) == set(bad_origins)
    for origin, field in bad_origins.items():
        assert found[origin].startswith(field + ":"), (found[origin], field)


def test_sink_keeps_the_raw_bytes_and_key(kafka, topic_names, create_topics_fn):
    (deadletter,) = create_topics_fn(topic_names("deadletter"))
    producer = make_producer(kafka, "test-deadletter-raw")
    sink = DeadLetterSink(producer, deadletter)
    raw = b"\xc3\x01\xff\xfe not avro"
    report = sink.send(raw, b"\x00\x00\x00\x07", "ingress.x", 2, 99,
                       ValidationError("value", "unknown schema fingerprint"))
    # A non-safehub error keeps its class but not its message, which could quote data.
    sink.send(None, None, "ingress.x", 0, 5, KeyError("JOHN SMITH"))
    producer.close()
    assert report.topic == deadletter

    reader = make_consumer(kafka, topic_names("dl"), [deadletter])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        for records_ in reader.poll(timeout_ms=500).values():
            got.extend(records_)
    reader.close()
    first, second = sorted(got, key=lambda m: m.offset)
    assert first.value == raw and first.key == b"\x00\x00\x00\x07"
    assert dict(first.headers)[HEADER_ERROR_MESSAGE] == b"value: unknown schema fingerprint"
    assert second.value == b"" and dict(second.headers)[HEADER_NULL_VALUE] == b"true"
    assert dict(second.headers)[HEADER_ERROR_CLASS] == b"KeyError"
    assert b"JOHN" not in dict(second.headers)[HEADER_ERROR_MESSAGE]
