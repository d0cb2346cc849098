"""The operator's view of `deadletter` on constructed records: dead letters, replay markers and
foreign records told apart; filters, the summary by source and reason, show's metadata (never
the value's bytes), and which letters a replay sends or refuses."""

from __future__ import annotations

import hashlib

import pytest

from safehub.consumers.deadletter import HEADER_NULL_VALUE, headers_for
from safehub.errors import ConfigError, ValidationError
from safehub.services.deadletters.command import operator_name
from safehub.services.deadletters.letters import (
    HEADER_REPLAY_AT,
    HEADER_REPLAY_BY,
    HEADER_REPLAY_OF,
    HEADER_REPLAY_TO,
    Consumed,
    Position,
    classify,
    distinct,
    line,
    metadata,
    parse_since,
    reason_of,
    select,
    summary,
    when,
)
from safehub.services.deadletters.replay import plan, replay_id

TOPIC = "p.deadletter"
T0 = 1_780_000_000_000
SECRET = b"\x01agency record bytes SMITH"


def letter(offset: int, source: str, error: Exception, at: int, value: bytes | None = SECRET,
           key: bytes | None = b"\0\0\0\7") -> Consumed:
    headers = headers_for(source, 2, 100 + offset, error, at)
    if value is None:
        headers.append((HEADER_NULL_VALUE, b"true"))
    return Consumed(0, offset, key, value, tuple(headers), at)


def marker(offset: int, of: int, by: str = "sam") -> Consumed:
    headers = ((HEADER_REPLAY_OF, f"{TOPIC}:0:{of}".encode()),
               (HEADER_REPLAY_TO, b"p.ingress.police-x:1:9"), (HEADER_REPLAY_BY, by.encode()),
               (HEADER_REPLAY_AT, str(T0 + 9_000).encode()))
    return Consumed(0, offset, None, b"", headers, T0 + 9_000)


PARTITION = ValidationError("partition", "is not the partition Kafka's default partitioner "
                                         "gives the record's key")
LATE = ValidationError("occurred_at", "is beyond the history limit", "it is 3 days behind")
LATER = ValidationError("occurred_at", "is beyond the history limit", "it is 9 days behind")


@pytest.fixture
def records() -> list[Consumed]:
    return [
        letter(0, "p.ingress.police-x", PARTITION, T0),
        letter(1, "p.ingress.police-x", LATE, T0 + 1_000),
        letter(2, "p.ingress.health-y", LATER, T0 + 2_000, value=None),
        letter(3, "p.alert-acks.csc-a", ValidationError("agency_id", "differs"), T0 + 3_000),
        Consumed(0, 4, None, b"junk", (("other", b"x"),), T0 + 4_000),
        marker(5, of=0),
        letter(6, "p.correlated", KeyError("JOHN"), T0 + 6_000, key=None),
        letter(7, "p.correlated", KeyError("x"), T0 + 7_000, key=None, value=None),
    ]


def test_records_are_told_apart(records: list[Consumed]) -> None:
    contents = classify(records, TOPIC)
    assert [x.position.offset for x in contents.letters] == [0, 1, 2, 3, 6, 7]
    assert [m.position.offset for m in contents.markers] == [5]
    assert contents.foreign == (Position(0, 4),)
    assert contents.replays_of(Position(0, 0))[0].by == "sam"
    assert contents.letters[2].value is None  # a null stays null, apart from empty
    # A marker of another deployment's dead-letter topic is not ours.
    assert classify([marker(0, of=0)], "q.deadletter").foreign == (Position(0, 0),)


def test_find_names_what_is_wrong(records: list[Consumed]) -> None:
    contents = classify(records, TOPIC)
    assert contents.find(Position(0, 1)).letter.offset == 101
    for offset, says in [(4, "not a safehub dead letter"), (5, "replay marker"),
                         (99, "no dead letter at 99")]:
        with pytest.raises(ValidationError, match=says):
            contents.find(Position(0, offset))


def test_filters_and_limit(records: list[Consumed]) -> None:
    letters = classify(records, TOPIC).letters
    assert [x.position.offset for x in select(letters, source="p.ingress.police-x")] == [0, 1]
    assert [x.position.offset for x in select(letters, reason="HISTORY LIMIT")] == [1, 2]
    assert [x.position.offset for x in select(letters, since_ms=T0 + 2_000)] == [2, 3, 6, 7]
    assert [x.position.offset for x in select(letters, limit=2)] == [0, 1]
    assert select(letters, source="p.ingress") == []  # a topic, not a prefix


def test_summary_counts_by_source_and_reason_without_details(records: list[Consumed]) -> None:
    more = [*records[:-1], letter(7, "p.ingress.police-x", LATER, T0 + 7_000)]
    assert summary(classify(more, TOPIC).letters) == [
        ("p.ingress.police-x", "occurred_at: is beyond the history limit", 2),
        ("p.alert-acks.csc-a", "agency_id: differs", 1),
        ("p.correlated", "KeyError", 1),  # a foreign error: its class only
        ("p.ingress.health-y", "occurred_at: is beyond the history limit", 1),
        ("p.ingress.police-x", "partition: is not the partition Kafka's default partitioner "
                               "gives the record's key", 1),
    ]
    assert reason_of("a: b (c) (d)") == "a: b"


def test_lines_and_metadata_never_hold_the_value(records: list[Consumed]) -> None:
    contents = classify(records, TOPIC)
    first = contents.letters[0]
    text = line(first, 1) + "\n".join(f"{k} {v}" for k, v in
                                      metadata(first, contents.replays_of(first.position)))
    assert "p.ingress.police-x[2]@100" in text and "[replayed x1]" in text
    assert hashlib.sha256(SECRET).hexdigest() in text
    assert "key length 4 bytes" in text and f"value length {len(SECRET)} bytes" in text
    assert "by sam to p.ingress.police-x:1:9" in text
    assert "SMITH" not in text and SECRET.hex() not in text
    null = dict(metadata(contents.letters[2], []))
    assert null["value length"] == "null"


def test_replay_plan_refuses_unwritable_sources_and_repeats(records: list[Consumed]) -> None:
    contents = classify(records, TOPIC)
    targets = ["p.correlated", "p.ingress.health-y", "p.ingress.police-x"]
    chosen = [contents.find(Position(0, o)) for o in (0, 1, 1, 3, 6, 7)]
    decided = plan(contents, chosen, targets, again=False)
    assert [x.position.offset for x in decided.send] == [1, 6]  # a repeat of 1 sent once
    why = {r.position.offset: r.why for r in decided.refused}
    assert "already replayed 1 time(s), last by sam" in why[0]
    assert "p.alert-acks.csc-a is not one a replay may write" in why[3]
    assert "neither key nor value" in why[7]
    again = plan(contents, chosen, targets, again=True)
    assert [x.position.offset for x in again.send] == [0, 1, 6]
    assert [r.position.offset for r in again.refused] == [3, 7]


def test_replay_ids_differ_per_replay_and_repeat_per_attempt(records: list[Consumed]) -> None:
    first = classify(records, TOPIC).letters[0]
    assert replay_id(TOPIC, first, 0) == replay_id(TOPIC, first, 0)
    assert len({replay_id(TOPIC, first, 0), replay_id(TOPIC, first, 1),
                replay_id("q.deadletter", first, 0)}) == 3


def test_positions_durations_and_operator_names() -> None:
    assert Position.parse("42") == Position(0, 42)
    assert Position.parse("1:42") == Position(1, 42) and str(Position(1, 42)) == "1:42"
    assert str(Position(0, 42)) == "42"
    for bad in ("x", "1:2:3", "-1", ""):
        with pytest.raises(ConfigError):
            Position.parse(bad)
    assert parse_since("6h", T0) == T0 - 6 * 3_600_000
    assert parse_since("2d", T0) == T0 - 2 * 86_400_000
    assert parse_since("2026-01-02", T0) == 1_767_312_000_000
    assert parse_since("2026-01-02T01:00:00+01:00", T0) == 1_767_312_000_000
    with pytest.raises(ConfigError, match="duration"):
        parse_since("yesterday", T0)
    assert operator_name("Sam O'Neil", "deadletter-operator") == "sam-o-neil"
    assert operator_name(None, "deadletter-operator")  # the login name, or the principal
    with pytest.raises(ConfigError):
        operator_name("!!!", "deadletter-operator")


def copy_of(offset: int, source_offset: int, at: int, value: bytes | None = SECRET) -> Consumed:
    """A dead letter about the record `letter(source_offset, ...)` refused: its consumer
    stopped before committing, read the record again and refused it again."""
    headers = headers_for("p.ingress.police-x", 2, 100 + source_offset, LATE, at)
    return Consumed(0, offset, b"\0\0\0\7", value, tuple(headers), at)


def test_a_record_dead_lettered_again_after_a_restart_is_one_record(
        records: list[Consumed]) -> None:
    more = [*records, copy_of(8, 1, T0 + 8_000), copy_of(9, 1, T0 + 9_500),
            copy_of(10, 1, T0 + 10_000, value=b"another record at that offset")]
    contents = classify(more, TOPIC)
    original = contents.find(Position(0, 1))
    assert [x.position.offset for x in contents.copies_of(original)] == [1, 8, 9]
    assert [(x.position.offset, n) for x, n in distinct(contents.letters)][:2] == [(0, 1),
                                                                                 (1, 3)]
    assert len(distinct(contents.letters)) == len(contents.letters) - 2
    # Counted once in the summary; a different value at the same offset is another record.
    assert ("p.ingress.police-x", "occurred_at: is beyond the history limit", 2) in \
        summary(contents.letters)
    assert "[dead-lettered x3]" in line(original, 0, 3)
    rows = metadata(original, [], contents.copies_of(original))
    assert [v for k, v in rows if k == "same record"] == [
        f"also dead-lettered as {n} at {when(T0 + ms)}" for n, ms in ((8, 8_000), (9, 9_500))]
    # A replay sends the record once, whichever copies are chosen...
    targets = ["p.ingress.police-x"]
    chosen = [contents.find(Position(0, o)) for o in (1, 8, 9)]
    assert [x.position.offset for x in plan(contents, chosen, targets, False).send] == [1]
    # ...and a replay of one copy is the record's: the others are refused without --again.
    replayed = classify([*more, marker(11, of=8)], TOPIC)
    decided = plan(replayed, [replayed.find(Position(0, 9))], targets, again=False)
    assert decided.send == () and "already replayed 1 time(s)" in decided.refused[0].why
    assert len(replayed.record_replays(replayed.find(Position(0, 1)))) == 1
