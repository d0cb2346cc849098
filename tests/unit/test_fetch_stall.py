"""fetch_stall.py: a consumer is taken for stuck only when its positions have not moved for
the bound while the brokers hold records past them."""

from __future__ import annotations

from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from safehub.fetch_stall import FetchStall

TP = TopicPartition("t", 0)


class Consumer:
    def __init__(self, position: int, end: int) -> None:
        self.pos, self.end, self.asked, self.fail = position, end, 0, False

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.pos

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        if self.fail:
            raise KafkaTimeoutError("no answer")
        return {TP: self.end}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_still_positions_with_records_waiting_are_a_stall_once_per_bound() -> None:
    clock, consumer = Clock(), Consumer(position=5, end=9)
    stall = FetchStall(60.0, clock)
    assert stall.check(consumer) is None
    clock.now = 59.0
    assert stall.check(consumer) is None and consumer.asked == 0  # no broker call before
    clock.now = 60.0
    assert stall.check(consumer) == ("4 record(s) wait on 1 partition(s) (t[0]) and the "
                                     "consumer has fetched none of them for 60 s")
    clock.now = 61.0
    assert stall.check(consumer) is None and consumer.asked == 1  # next ask at 120 s


def test_moving_or_caught_up_is_no_stall() -> None:
    clock, consumer = Clock(), Consumer(position=5, end=9)
    stall = FetchStall(60.0, clock)
    for t in range(0, 600, 30):
        clock.now, consumer.pos = float(t), 5 + t  # moves every check
        assert stall.check(consumer) is None
    level = Consumer(position=9, end=9)
    clock.now = 1000.0
    assert stall.check(level) is None
    clock.now = 2000.0
    assert stall.check(level) is None and level.asked == 1


def test_brokers_that_cannot_answer_are_asked_again_later() -> None:
    clock, consumer = Clock(), Consumer(position=5, end=9)
    stall = FetchStall(60.0, clock)
    stall.check(consumer)
    consumer.fail, clock.now = True, 60.0
    assert stall.check(consumer) is None
    consumer.fail, clock.now = False, 120.0
    assert stall.check(consumer) is not None


def test_a_failed_step_starts_the_bound_afresh() -> None:
    # As CI caught: a router back from a 71 s broker outage, its positions unmoved since
    # before it, was at once taken for stuck.
    clock, consumer = Clock(), Consumer(position=5, end=9)
    stall = FetchStall(60.0, clock)
    stall.check(consumer)
    clock.now = 71.0
    stall.reset()  # the loop's last failed step
    clock.now = 82.0
    assert stall.check(consumer) is None and consumer.asked == 0
    clock.now = 131.0
    assert stall.check(consumer) is None
    clock.now = 142.0
    assert stall.check(consumer) is not None
