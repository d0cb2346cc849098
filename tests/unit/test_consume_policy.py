"""The consume loop's error policies (safehub.consuming), as docs/error-policies.md states them.

`decide` is pure: each service's declared policy is checked row by row here. A few tests run
the loop itself over a stand-in consumer (no broker: the integration tests of each service do
that) to check its order: handler, then dead letters, then the commit; a retried batch read
again from its first offsets; a stop raised with its exit code.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import GroupAuthorizationFailedError, KafkaTimeoutError

from safehub.consumers.inbox.consumer import POLICY as INBOX
from safehub.consumers.inbox.store import RecordRefused
from safehub.consuming import (
    EXIT_BUG,
    EXIT_TEMPORARY,
    Action,
    Backoff,
    Batch,
    ConsumeLoop,
    ErrorPolicy,
    OutageTooLong,
    Rewind,
    Rule,
    ServiceStopped,
    decide,
    exit_code_of,
)
from safehub.errors import BrokerError, ConfigError, StoreError, ValidationError
from safehub.fetch_stall import FetchStall
from safehub.observability.watch import ServiceWatch
from safehub.services.audit.sink import POLICY as AUDIT_SINK
from safehub.services.router.service import POLICY as ROUTER
from tests.fixtures.topics import Rec

BAD = ValidationError("alert_id", "not 32 lower-case hex characters")


def action(policy: ErrorPolicy, error: BaseException, per_record: bool = False) -> Action:
    return decide(policy, error, per_record=per_record).action


@pytest.mark.parametrize("policy", [ROUTER, INBOX, AUDIT_SINK], ids=lambda p: p.service)
def test_a_record_that_breaks_the_contract_is_dead_lettered(policy: ErrorPolicy) -> None:
    assert action(policy, BAD, per_record=True) is Action.DEAD_LETTER


@pytest.mark.parametrize("policy", [ROUTER, INBOX, AUDIT_SINK], ids=lambda p: p.service)
def test_an_unexpected_error_stops_the_service_as_a_bug(policy: ErrorPolicy) -> None:
    for error in (KeyError("x"), ConfigError("no routing table"), AssertionError()):
        decision = decide(policy, error, per_record=False)
        assert (decision.action, decision.exit_code) == (Action.STOP, EXIT_BUG)
    # A record's error raised for a whole batch blames no record: a bug, not a dead letter.
    assert decide(policy, BAD, per_record=False).exit_code == EXIT_BUG


def test_router_retries_the_broker_and_the_database_then_gives_up_with_75() -> None:
    bounded = dataclasses.replace(ROUTER, max_outage_s=900.0)
    for error in (BrokerError("down"), StoreError("router database: OperationalError"),
                  KafkaTimeoutError(), GroupAuthorizationFailedError(),
                  OSError(107, "Transport endpoint is not connected")):
        assert action(bounded, error) is Action.RETRY
        assert decide(bounded, error, per_record=False, outage_s=899.9).action is Action.RETRY
        late = decide(bounded, error, per_record=False, outage_s=900.0)
        assert (late.action, late.exit_code, late.gave_up) == (Action.STOP, EXIT_TEMPORARY,
                                                               True)
    # SAFEHUB_ROUTER_MAX_OUTAGE_S=0: waits for ever.
    assert decide(ROUTER, BrokerError("down"), per_record=False,
                  outage_s=1e9).action is Action.RETRY
    assert ROUTER.rewind is Rewind.COMMITTED  # its memory is rebuilt from its store


def test_inbox_dead_letters_refused_data_and_waits_out_outages() -> None:
    refused = RecordRefused("inbox database: DataError")
    assert action(INBOX, refused, per_record=True) is Action.DEAD_LETTER
    # RecordRefused is a StoreError: the rule order is what keeps it from being retried.
    assert action(INBOX, StoreError("inbox database: OperationalError")) is Action.RETRY
    assert action(INBOX, BrokerError("dead letter not acknowledged")) is Action.RETRY
    assert decide(INBOX, StoreError("down"), per_record=False,
                  outage_s=86_400.0).action is Action.RETRY  # no bound: nothing is lost
    for error in (GroupAuthorizationFailedError(), OSError(107, "not connected")):
        stop = decide(INBOX, error, per_record=False)
        assert (stop.action, stop.exit_code) == (Action.STOP, EXIT_TEMPORARY)
    assert INBOX.rewind is Rewind.BATCH


def test_audit_sink_stops_on_any_dependency_error() -> None:
    for error in (BrokerError("x"), StoreError("x"), KafkaTimeoutError(), OSError()):
        decision = decide(AUDIT_SINK, error, per_record=False)
        assert (decision.action, decision.exit_code) == (Action.STOP, EXIT_TEMPORARY)


def test_backoff_doubles_to_its_longest_wait() -> None:
    backoff = Backoff(0.5, 10.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    policy = ErrorPolicy("x", (Rule((BrokerError,), Action.RETRY),), backoff)
    assert decide(policy, BrokerError("x"), per_record=False, failures=3).delay_s == 2.0


def test_exit_codes() -> None:
    assert exit_code_of(OutageTooLong("gave up")) == EXIT_TEMPORARY
    assert exit_code_of(ServiceStopped("stopping", 75)) == 75
    assert exit_code_of(RuntimeError("bug")) == EXIT_BUG
    assert isinstance(OutageTooLong("x"), BrokerError)  # as the router's callers catch it


@dataclass
class StandIn:
    """A consumer over a list of records per partition, one batch per poll."""

    records: list[Rec]
    position_: int = 0
    committed_: dict[TopicPartition, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Rec]]:
        batch = self.records[self.position_:self.position_ + 2]
        self.position_ += len(batch)
        return {TopicPartition("t", 0): batch} if batch else {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)}

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.position_

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.log.append(f"seek {offset}")
        self.position_ = offset

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        for tp, meta in offsets.items():
            self.committed_[tp] = meta.offset
        self.log.append(f"commit {offsets[TopicPartition('t', 0)].offset}")


@dataclass
class Handler:
    consumer: StandIn
    fail: list[Exception]

    def handle(self, batch: Batch) -> None:
        if not len(batch):
            return

        def take(rec: Any) -> None:
            if rec.value == b"bad":
                raise BAD
        batch.each(take)
        if self.fail:
            raise self.fail.pop(0)
        self.consumer.log.append(f"stored {[r.offset for r in batch]}")

    def reset(self) -> None:
        self.consumer.log.append("reset")


@dataclass
class Letters:
    consumer: StandIn

    def send_record(self, record: Any, error: Exception) -> None:
        self.consumer.log.append(f"dead-letter {record.offset}")


def loop_over(values: list[bytes], fail: list[Exception],
              policy: ErrorPolicy = INBOX) -> tuple[ConsumeLoop, StandIn]:
    consumer = StandIn([Rec("t", 0, n, None, v) for n, v in enumerate(values)])
    fast = dataclasses.replace(policy, backoff=Backoff(0.0, 0.0))
    loop = ConsumeLoop(consumer, Handler(consumer, fail), fast,
                       Letters(consumer), ServiceWatch("test-consume"), "test",
                       logging.getLogger("test"))
    return loop, consumer


def steps(loop: ConsumeLoop, n: int) -> list[int]:
    stop = threading.Event()
    return [loop.step(stop, 0) for _ in range(n)]


def test_loop_stores_then_dead_letters_then_commits() -> None:
    loop, consumer = loop_over([b"a", b"bad", b"c"], [])
    assert steps(loop, 3) == [2, 1, 0]
    assert consumer.log == ["stored [0, 1]", "dead-letter 1", "commit 2", "stored [2]",
                            "commit 3"]
    assert loop.deadlettered == 1 and loop.failures == 0


def test_loop_rereads_a_failed_batch_from_its_first_offset() -> None:
    loop, consumer = loop_over([b"a", b"b", b"c"], [StoreError("inbox database: down")] * 2)
    assert steps(loop, 4) == [0, 0, 2, 1]
    assert consumer.log == ["seek 0", "seek 0", "stored [0, 1]", "commit 2", "stored [2]",
                            "commit 3"]
    assert loop.failures == 2 and loop.outage is None


def test_loop_rewinds_to_the_committed_offsets_after_a_reset() -> None:
    loop, consumer = loop_over([b"a", b"b", b"c"], [BrokerError("down")], ROUTER)
    consumer.committed = lambda tp, timeout_ms: None  # type: ignore[attr-defined]
    consumer.seek_to_beginning = lambda *tps: consumer.log.append(  # type: ignore[attr-defined]
        "seek to beginning")
    assert steps(loop, 1) == [0]
    assert loop.not_ready() == "waiting: down"
    consumer.position_ = 0  # where seek_to_beginning puts it
    assert steps(loop, 1) == [2]
    assert consumer.log == ["reset", "seek to beginning", "stored [0, 1]", "commit 2"]
    assert loop.not_ready() is None


def test_loop_raises_what_stops_the_service() -> None:
    loop, consumer = loop_over([b"a"], [GroupAuthorizationFailedError()])
    with pytest.raises(ServiceStopped) as stopped:
        steps(loop, 1)
    assert stopped.value.exit_code == EXIT_TEMPORARY
    assert consumer.log == []  # nothing stored, nothing committed
    bug, _ = loop_over([b"a"], [KeyError("bug")])
    with pytest.raises(KeyError):
        steps(bug, 1)


def test_loop_gives_up_once_the_outage_outlasts_the_bound() -> None:
    bounded = dataclasses.replace(ROUTER, max_outage_s=0.0)
    loop, _ = loop_over([b"a"], [StoreError("router database: OperationalError")], bounded)
    with pytest.raises(OutageTooLong, match=r"gave up after .* router database"):
        steps(loop, 1)


def test_a_failed_step_starts_the_stall_bound_afresh() -> None:
    # As CI caught: a router back from a 71 s broker outage, its position unmoved since before
    # it, was at once stopped as a stuck consumer.
    loop, consumer = loop_over([], [])
    now = [0.0]
    loop.stall = FetchStall(60.0, lambda: now[0])
    consumer.end_offsets = lambda tps: {tp: 5 for tp in tps}  # type: ignore[attr-defined]
    steps(loop, 1)  # records wait past position 0 from the start

    def down(timeout_ms: int) -> dict[TopicPartition, list[Rec]]:
        raise BrokerError("down")

    polls, consumer.poll = consumer.poll, down  # type: ignore[method-assign]
    now[0] = 71.0
    assert steps(loop, 1) == [0] and loop.outage is not None  # the outage's last failure
    consumer.poll = polls  # type: ignore[method-assign]
    now[0] = 82.0
    assert steps(loop, 1) == [0] and loop.outage is None  # back, and not taken for stuck
    now[0] = 131.0
    assert steps(loop, 1) == [0]
    now[0] = 142.0
    with pytest.raises(ServiceStopped, match="5 record"):
        steps(loop, 1)
