"""The stall watch (services/correlator/stalls.py): a commit held by a message faust lost is
re-read; one held by a message still on its way (a slow commit) is waited for, a bounded time.

The consumer here stands in for faust's, with the attributes the watch reads (listed in
faust_contract.py); the watch's effect on a real group is in the integration tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakSet

from safehub.services.correlator.stalls import IN_FLIGHT_CHECKS, StallWatch


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class Message:
    def __init__(self, tp: TP, offset: int) -> None:
        self.tp = tp
        self.offset = offset


@dataclass
class Consumer:
    tp: TP
    committed: int
    position_: int
    sought: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._committed_offset = {self.tp: self.committed}
        self._commit_fut: asyncio.Future[None] | None = None
        self._unacked_messages: WeakSet[Message] = WeakSet()
        self._acked_index: dict[TP, set[int]] = {}
        self._buffered_partitions: set[Any] = set()

    def assignment(self) -> set[TP]:
        return {self.tp}

    def _get_active_partitions(self) -> set[TP]:
        return {self.tp}

    def resume_partitions(self, tps: set[TP]) -> None:
        raise AssertionError("nothing is paused here")

    async def position(self, tp: TP) -> int:
        return self.position_

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append(offset)
        self.position_ = offset


class Tables:
    changelog_topics: set[str] = set()


class App:
    rebalancing = False
    in_recovery = False
    tables = Tables()

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer


TP0 = TP("p.ingress.police", 0)


def checks(watch: StallWatch, app: App, n: int) -> None:
    async def run() -> None:
        for _ in range(n):
            await watch.check(app)

    asyncio.run(run())


def test_a_message_lost_at_the_committed_offset_is_re_read_on_the_second_check() -> None:
    consumer = Consumer(TP0, committed=100, position_=400)
    app = App(consumer)
    watch = StallWatch()
    checks(watch, app, 1)
    assert consumer.sought == []  # once: the commit may just not have run yet
    checks(watch, app, 1)
    assert consumer.sought == [100]


def in_flight_from(committed: int, read_to: int) -> tuple[Consumer, list[Message]]:
    """A consumer whose messages from the committed offset on are handed on, none acked; the
    messages are returned so that they stay tracked (faust's set holds them weakly)."""
    consumer = Consumer(TP0, committed=committed, position_=read_to)
    in_flight = [Message(TP0, o) for o in range(committed, read_to)]
    for m in in_flight:
        consumer._unacked_messages.add(m)
    return consumer, in_flight


def test_a_message_still_on_its_way_is_waited_for_a_bounded_time() -> None:
    consumer, _in_flight = in_flight_from(100, 400)
    app = App(consumer)
    watch = StallWatch()
    checks(watch, app, 2)
    assert consumer.sought == []  # where a lost message is re-read (above), this one is not
    checks(watch, app, IN_FLIGHT_CHECKS - 1)
    assert consumer.sought == []
    checks(watch, app, 1)  # still held after that: faust may have lost it without letting go
    assert consumer.sought == [100]


def test_a_commit_under_way_holds_the_re_read_until_it_is_answered() -> None:
    # faust drops the offsets it commits from its acked list before the coordinator answers,
    # so while a commit hangs (a coordinator failing over) the committed offset's message is
    # tracked nowhere: the commit under way is what says it is not lost.
    consumer = Consumer(TP0, committed=100, position_=400)
    app = App(consumer)
    watch = StallWatch()

    async def run() -> None:
        consumer._commit_fut = asyncio.get_running_loop().create_future()
        for _ in range(3):
            await watch.check(app)
        assert consumer.sought == []
        consumer._commit_fut = None  # answered: the commit moved
        consumer._committed_offset[TP0] = 250
        await watch.check(app)
        assert consumer.sought == []

    asyncio.run(run())


def test_a_message_on_its_way_on_another_partition_does_not_hide_a_hole() -> None:
    consumer = Consumer(TP0, committed=100, position_=400)
    other = Message(TP("p.ingress.police", 1), 100)
    consumer._unacked_messages.add(other)
    app = App(consumer)
    watch = StallWatch()
    checks(watch, app, 2)
    assert consumer.sought == [100]


def test_a_message_acked_and_not_yet_committed_is_waited_for() -> None:
    # A batch's transaction ends and acks its messages; faust commits the acked offsets at its
    # next commit, a second or so later (or later still while the group coordinator is away).
    # A check in between once took the committed offset's message for lost.
    consumer, in_flight = in_flight_from(100, 400)
    app = App(consumer)
    watch = StallWatch()
    checks(watch, app, 1)
    for m in in_flight[:150]:  # the transaction is committed: acked, tracked no more
        consumer._unacked_messages.discard(m)
    consumer._acked_index[TP0] = set(range(100, 250))
    checks(watch, app, 1)
    assert consumer.sought == []
    consumer._acked_index[TP0] = set()  # committed
    consumer._committed_offset[TP0] = 250
    checks(watch, app, 2)
    assert consumer.sought == []  # messages 250-399 are still on their way
