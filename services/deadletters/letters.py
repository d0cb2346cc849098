"""Dead letters as an operator sees them: what is on `deadletter`, filtered and summed. Pure.

The topic holds two kinds of record. A dead letter (consumers/deadletter.py) is a refused
record's raw value and key with headers naming its source topic, partition and offset, the
error's class and message, and when. A replay marker (written by `safehub deadletter replay`
after it has sent a dead letter back) names the dead letter it replayed, where to, by whom and
when; it carries no value. Anything else there (a record without those headers) is counted as
foreign and never replayed.

A dead letter's reason is its error message up to the detail in brackets (`field: rule`), so that
letters refused by one rule sum together whatever their details.

Repeats. A consumer that dead-letters a record and stops before committing its offset (a crash,
a kill, a broker lost) reads the record again on restart and dead-letters it again: the router,
the inbox and the audit sink send dead letters outside any transaction. Letters with the same
source topic, partition, offset, key and value are therefore one refused record (`Letter.record`):
the listing shows it once with the number of copies, the summary counts it once, and a replay
sends it once and counts a replay of any copy as its replay.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from safehub.consumers.deadletter import HEADER_NULL_VALUE, dead_letter_from
from safehub.errors import ConfigError, ValidationError
from safehub.schemas.records import DeadLetter

# On a marker and on the replayed record: "<deadletter topic>:<partition>:<offset>".
HEADER_REPLAY_OF = "safehub.replay.of"
HEADER_REPLAY_TO = "safehub.replay.to"  # on a marker: "<topic>:<partition>:<offset>"
HEADER_REPLAY_BY = "safehub.replay.by"
HEADER_REPLAY_AT = "safehub.replay.at"

# A refused record: source topic, partition, offset, key, SHA-256 of the value (hex).
RecordId = tuple[str, int, int, bytes | None, str]

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record is on the dead-letter topic."""

    partition: int
    offset: int

    def __str__(self) -> str:
        # The topic has one partition by default: its offset alone names a record.
        return str(self.offset) if self.partition == 0 else f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """`OFFSET` (partition 0) or `PARTITION:OFFSET`."""
        parts = text.split(":")
        if len(parts) > 2 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"{text!r} is not a dead letter's OFFSET or PARTITION:OFFSET")
        return cls(int(parts[0]), int(parts[1])) if len(parts) == 2 else cls(0, int(parts[0]))


@dataclass(frozen=True, slots=True)
class Consumed:
    """A record as read from the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def position(self) -> Position:
        return Position(self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter: the refused record and why."""

    position: Position
    letter: DeadLetter
    key: bytes | None
    value: bytes | None  # None: the source record's value was null
    headers: tuple[tuple[str, bytes], ...]

    @property
    def reason(self) -> str:
        return reason_of(self.letter.error_message)

    @property
    def source(self) -> str:
        return self.letter.source_topic

    @property
    def value_sha256(self) -> str:
        return hashlib.sha256(self.value or b"").hexdigest()

    @property
    def record(self) -> RecordId:
        """The refused record this letter is about: copies of one letter share it."""
        d = self.letter
        return d.source_topic, d.partition, d.offset, self.key, self.value_sha256


@dataclass(frozen=True, slots=True)
class Marker:
    """A replay of the dead letter at `of`, sent to `to` ("<topic>:<partition>:<offset>")."""

    position: Position
    of: Position
    to: str
    by: str
    at: int


@dataclass(frozen=True, slots=True)
class Contents:
    """The dead-letter topic, read up to its end offsets."""

    letters: tuple[Letter, ...]
    markers: tuple[Marker, ...]
    foreign: tuple[Position, ...]  # records that are neither
    # Indexes built once: a flood leaves 100,000 letters (and a replay of it as many markers),
    # and each line of `list` asks for its copies and replays.
    _copies: dict[RecordId, list[Letter]] = field(init=False, repr=False, compare=False)
    _replays: dict[Position, list[Marker]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        copies: dict[RecordId, list[Letter]] = {}
        for x in self.letters:
            copies.setdefault(x.record, []).append(x)
        replays: dict[Position, list[Marker]] = {}
        for m in self.markers:
            replays.setdefault(m.of, []).append(m)
        object.__setattr__(self, "_copies", copies)
        object.__setattr__(self, "_replays", replays)

    def replays_of(self, position: Position) -> list[Marker]:
        return list(self._replays.get(position, ()))

    def copies_of(self, letter: Letter) -> list[Letter]:
        """Every letter about `letter`'s refused record (itself included), oldest first."""
        return list(self._copies.get(letter.record, ()))

    def record_replays(self, letter: Letter) -> list[Marker]:
        """The replays of `letter`'s refused record, through any of its copies."""
        return [m for copy in self.copies_of(letter) for m in self.replays_of(copy.position)]

    def find(self, position: Position) -> Letter:
        for letter in self.letters:
            if letter.position == position:
                return letter
        if position in self.foreign:
            raise ValidationError("offset", f"{position} is not a safehub dead letter (no "
                                            "source headers): nothing to show or replay")
        if any(m.position == position for m in self.markers):
            raise ValidationError("offset", f"{position} is a replay marker, not a dead letter")
        raise ValidationError("offset", f"no dead letter at {position}")


def reason_of(message: str) -> str:
    """`field: rule (detail)` -> `field: rule`; a message without detail is its own reason."""
    if message.endswith(")") and " (" in message:
        return message[: message.index(" (")]
    return message


def classify(records: Iterable[Consumed], topic: str) -> Contents:
    letters: list[Letter] = []
    markers: list[Marker] = []
    foreign: list[Position] = []
    for r in records:
        found = dict(r.headers)
        if HEADER_REPLAY_OF in found:
            marker = _marker(r, found, topic)
            if marker is None:
                foreign.append(r.position)
            else:
                markers.append(marker)
            continue
        try:
            letter = dead_letter_from(r.value, r.headers, r.timestamp_ms)
        except ValidationError:
            foreign.append(r.position)
            continue
        value = None if found.get(HEADER_NULL_VALUE) == b"true" else (r.value or b"")
        letters.append(Letter(r.position, letter, r.key, value, r.headers))
    return Contents(tuple(letters), tuple(markers), tuple(foreign))


def replay_reference(topic: str, position: Position) -> bytes:
    return f"{topic}:{position.partition}:{position.offset}".encode("ascii")


def _marker(r: Consumed, found: dict[str, bytes], topic: str) -> Marker | None:
    try:
        of_topic, partition, offset = found[HEADER_REPLAY_OF].decode("ascii").rsplit(":", 2)
        if of_topic != topic:
            return None
        return Marker(r.position, Position(int(partition), int(offset)),
                      found[HEADER_REPLAY_TO].decode("ascii"),
                      found[HEADER_REPLAY_BY].decode("ascii"),
                      int(found[HEADER_REPLAY_AT]))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def parse_since(text: str, now_ms: int) -> int:
    """A time in ms: an ISO date or date-time (UTC unless it says otherwise), or a duration
    back from now (`90m`, `6h`, `7d`)."""
    m = _DURATION.match(text.strip())
    if m:
        delta = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        return now_ms - int(delta.total_seconds() * 1000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since {text!r}: not an ISO date/time or a duration such as 6h, "
                          "7d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def select(letters: Sequence[Letter], source: str | None = None, reason: str | None = None,
           since_ms: int | None = None, limit: int | None = None) -> list[Letter]:
    """The letters from `source` (a topic name, exact), whose reason contains `reason` (case
    blind), dead-lettered at or after `since_ms`, oldest first, at most `limit`."""
    wanted = reason.lower() if reason else None
    out = [x for x in sorted(letters, key=lambda x: (x.letter.at, x.position.partition,
                                                     x.position.offset))
           if (source is None or x.source == source)
           and (wanted is None or wanted in x.letter.error_message.lower())
           and (since_ms is None or x.letter.at >= since_ms)]
    return out if limit is None else out[:limit]


def distinct(letters: Iterable[Letter]) -> list[tuple[Letter, int]]:
    """Each refused record once, as its first letter in the order given, with its number of
    copies among `letters`."""
    first: dict[RecordId, Letter] = {}
    copies: Counter[RecordId] = Counter()
    for x in letters:
        first.setdefault(x.record, x)
        copies[x.record] += 1
    return [(x, copies[record]) for record, x in first.items()]


def summary(letters: Iterable[Letter]) -> list[tuple[str, str, int]]:
    """(source topic, reason, count of refused records: repeats once), most frequent first."""
    counts = Counter((x.source, x.reason) for x, _ in distinct(letters))
    return sorted(((s, r, n) for (s, r), n in counts.items()), key=lambda t: (-t[2], t[0], t[1]))


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def line(letter: Letter, replays: int = 0, copies: int = 1) -> str:
    """One line per dead letter; what is printed is ours (headers we wrote), never the value."""
    d = letter.letter
    mark = f"  [dead-lettered x{copies}]" if copies > 1 else ""
    mark += f"  [replayed x{replays}]" if replays else ""
    return (f"{letter.position!s:>8}  {when(d.at)}  {d.source_topic}[{d.partition}]@{d.offset}"
            f"  {d.error_class}: {d.error_message}{mark}")


def metadata(letter: Letter, replays: Sequence[Marker],
             copies: Sequence[Letter] = ()) -> list[tuple[str, str]]:
    """What `show` prints: the envelope, sizes and a digest of the value, never its bytes."""
    d = letter.letter
    rows = [
        ("dead letter", str(letter.position)),
        ("source", f"{d.source_topic} partition {d.partition} offset {d.offset}"),
        ("error class", d.error_class),
        ("error message", d.error_message),
        ("dead-lettered at", f"{when(d.at)} ({d.at})"),
        ("key length", "null" if letter.key is None else f"{len(letter.key)} bytes"),
        ("value length", "null" if letter.value is None else f"{len(letter.value)} bytes"),
        ("value sha256", letter.value_sha256),
        ("headers", ", ".join(name for name, _ in letter.headers)),
    ]
    rows += [(f"header {name}", f"{len(raw)} bytes") for name, raw in letter.headers
             if not name.startswith("safehub.")]
    rows += [("same record", f"also dead-lettered as {x.position} at {when(x.letter.at)}")
             for x in copies if x.position != letter.position]
    rows += [("replayed", f"{when(m.at)} by {m.by} to {m.to} (marker {m.position})")
             for m in replays]
    return rows
