"""The one consume loop of the kafka-python services, and the error policy each one declares.

One step: poll, hand the batch to the service's handler, dead-letter the records it refused,
commit the offsets, in that order, so an offset is committed only once everything its record
caused is durable (rows stored, records acknowledged). A failure anywhere before the commit
leaves the input where it was: the batch is read again, and idempotent sinks drop what was
done already.

What a failure means is declared, not coded into each loop: an `ErrorPolicy` is a table of
rules (exception kinds -> dead-letter the record / retry the batch with backoff / stop the
service with an exit code), and `decide` reads it. `decide` is pure (no clock, no I/O) so that
every service's policy is checked by unit tests (tests/unit/test_consume_policy.py) and listed
side by side in docs/error-policies.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition

from safehub.bus import commit_batches
from safehub.consumers.deadletter import ConsumedRecord, error_text
from safehub.errors import BrokerError, SafehubError
from safehub.fetch_stall import FetchStall
from safehub.observability.watch import ServiceWatch

# sysexits.h, as the supervisor and the deployment's restart policy expect them.
EXIT_TEMPORARY = 75  # EX_TEMPFAIL: a dependency is away; restart me, nothing is lost
EXIT_BUG = 70  # EX_SOFTWARE: an unexpected error; the traceback is in the log
COMMITTED_TIMEOUT_MS = 10_000  # reading the group's offsets on a rewind: fail, then retry


class Action(Enum):
    DEAD_LETTER = "dead-letter"  # this record only: kept on `deadletter` with the reason
    RETRY = "retry"  # the batch: nothing committed, read again after a backoff
    STOP = "stop"  # the service: exit with the rule's code, to be restarted


class Rewind(Enum):
    """Where a retried batch is read again from."""

    BATCH = "batch"  # the failed batch's first offsets: the handler keeps no state across it
    COMMITTED = "committed"  # the group's committed offsets (the start where there are none),
    # after the handler rebuilt its state from its store: its memory may be ahead of both


@dataclass(frozen=True, slots=True)
class Rule:
    kinds: tuple[type[BaseException], ...]
    action: Action
    exit_code: int = EXIT_BUG  # STOP only


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 1.0
    longest_s: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th consecutive failure: doubling from `first_s`."""
        return min(self.first_s * 2.0 ** max(0, failures - 1), self.longest_s)


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What each kind of failure does to one service. The first rule whose kinds match wins;
    an error no rule names is a bug: the service stops with EXIT_BUG."""

    service: str
    rules: tuple[Rule, ...]
    backoff: Backoff = Backoff()
    # Retrying for longer than this stops the service with EXIT_TEMPORARY, so the deployment
    # restarts it with fresh clients; None waits for as long as it takes.
    max_outage_s: float | None = None
    rewind: Rewind = Rewind.BATCH


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_s: float = 0.0  # RETRY
    exit_code: int = 0  # STOP
    gave_up: bool = False  # STOP: a retried failure outlasted max_outage_s


def classify(policy: ErrorPolicy, error: BaseException) -> Rule:
    for rule in policy.rules:
        if isinstance(error, rule.kinds):
            return rule
    return Rule((), Action.STOP, EXIT_BUG)


def decide(policy: ErrorPolicy, error: BaseException, *, per_record: bool, failures: int = 1,
           outage_s: float = 0.0) -> Decision:
    """What to do about `error`: raised for one record (`per_record`) or for the whole batch,
    the `failures`-th consecutive failure of an outage that has lasted `outage_s`."""
    rule = classify(policy, error)
    if rule.action is Action.DEAD_LETTER:
        if per_record:
            return Decision(Action.DEAD_LETTER)
        # A batch cannot be dead-lettered: there is no one record to blame.
        return Decision(Action.STOP, exit_code=EXIT_BUG)
    if rule.action is Action.RETRY:
        if policy.max_outage_s is not None and outage_s >= policy.max_outage_s:
            return Decision(Action.STOP, exit_code=EXIT_TEMPORARY, gave_up=True)
        return Decision(Action.RETRY, delay_s=policy.backoff.delay(failures))
    return Decision(Action.STOP, exit_code=rule.exit_code)


class ServiceStopped(SafehubError):
    """The policy stopped the service; the process exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OutageTooLong(ServiceStopped, BrokerError):
    """A dependency stayed unreachable for longer than the policy's `max_outage_s`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_TEMPORARY)


def exit_code_of(error: BaseException) -> int:
    """The process exit code for an error that ended a consume loop."""
    return error.exit_code if isinstance(error, ServiceStopped) else EXIT_BUG


def run_service(run: Callable[[], None], log: logging.Logger, service: str) -> int:
    """Run a service's loop to its end; the process's exit code: 0 when stopped on purpose,
    else the one its policy declares (EXIT_BUG, with the traceback, for an unexpected error).
    The in-memory state can no longer be trusted; the committed offsets and the stores can,
    so a restart loses nothing."""
    try:
        run()
    except ServiceStopped as exc:
        log.error("%s stopping: %s; exit %d, to be restarted", service, exc, exc.exit_code)
        return exc.exit_code
    except Exception:
        log.exception("%s stopping on an unexpected error; exit %d, to be restarted", service,
                      EXIT_BUG)
        return EXIT_BUG
    return 0


def reason_of(error: BaseException) -> str:
    """Ours say what failed; a library's message may quote data, so only its class is told."""
    if isinstance(error, SafehubError):
        return error_text(error)
    return f"broker: {type(error).__name__}"


Batches = Mapping[TopicPartition, Sequence[Any]]


class Batch:
    """One poll's records, and those the handler refused (dead-lettered after its effects)."""

    def __init__(self, batches: Batches, policy: ErrorPolicy) -> None:
        self.batches = batches
        self._policy = policy
        self.refused: list[tuple[ConsumedRecord, Exception]] = []

    def __iter__(self) -> Iterator[Any]:
        for records in self.batches.values():
            yield from records

    def __len__(self) -> int:
        return sum(len(r) for r in self.batches.values())

    def each(self, take: Callable[[Any], None], records: Sequence[Any] | None = None) -> None:
        """`take` every record (or those given); a record whose error the policy dead-letters
        is refused, any other error fails the batch."""
        for rec in self if records is None else records:
            try:
                take(rec)
            except Exception as exc:
                if decide(self._policy, exc, per_record=True).action is not Action.DEAD_LETTER:
                    raise
                self.refused.append((rec, exc))

    def refuse(self, record: ConsumedRecord, error: Exception) -> None:
        self.refused.append((record, error))


class Handler(Protocol):
    def handle(self, batch: Batch) -> None:
        """Make the batch's effects durable (stored, acknowledged); refuse bad records."""

    def reset(self) -> None:
        """Before a retried batch is read again: rebuild what is held in memory."""


class RecordDeadLetters(Protocol):
    def send_record(self, record: ConsumedRecord, error: Exception) -> Any: ...


@dataclass
class Outage:
    """The service has been failing since `since` (monotonic)."""

    reason: str
    since: float
    failures: int = 0


@dataclass
class ConsumeLoop:
    """Polls `consumer` for `handler` under `policy`. `commits=False` for a consumer whose
    position is kept elsewhere (the audit sink's ledger)."""

    consumer: KafkaConsumer
    handler: Handler
    policy: ErrorPolicy
    deadletters: RecordDeadLetters | None
    watch: ServiceWatch
    part: str  # this consumer's name for the heartbeat and assignment checks
    log: logging.Logger  # the service's own logger: its operators filter on it
    commits: bool = True
    outage: Outage | None = None
    failures: int = 0  # failed steps, ever
    deadlettered: int = 0
    _streak: int = 0
    _rewind: dict[TopicPartition, int] | None = field(default=None, repr=False)
    _stale: bool = False
    # A consumer wedged inside kafka-python (fetch_stall.py): the service stops, to be
    # restarted with new clients.
    stall: FetchStall = field(default_factory=FetchStall)

    def run(self, stop: threading.Event, timeout_ms: int = 500) -> None:
        while not stop.is_set():
            self.step(stop, timeout_ms)

    def step(self, stop: threading.Event | None = None, timeout_ms: int = 500) -> int:
        """One batch, done for good; returns how many records it held. A failure the policy
        retries is waited out here (0 returned); one it stops on is raised."""
        batches: Batches = {}
        try:
            if self._stale:
                self._read_again()
            batches = self.consumer.poll(timeout_ms=timeout_ms)
            started = time.perf_counter()
            self.watch.polled(self.part, self.consumer, batches)
            batch = Batch(batches, self.policy)
            self.handler.handle(batch)
            for rec, error in batch.refused:
                if self.deadletters is None:
                    raise BrokerError("a refused record and no dead-letter topic")
                self.deadletters.send_record(rec, error)
            if self.commits:
                commit_batches(self.consumer, batches, self.part)
        except Exception as exc:  # noqa: BLE001 - the policy decides; a bug is re-raised
            self._failed(exc, batches, stop)
            return 0
        self._recovered()
        if not batch and (stuck := self.stall.check(self.consumer)) is not None:
            raise ServiceStopped(f"{self.policy.service} stopping: {stuck}; a restart reads on "
                                 "from the committed offsets with new clients", EXIT_TEMPORARY)
        self.deadlettered += len(batch.refused)
        for rec, error in batch.refused:
            self.watch.metrics.dead_letter(rec.topic, error)
        self.watch.processed(batches, started)
        return len(batch)

    def trouble(self, reason: str) -> None:
        """Count a failure; say so in the log once per outage (not once per retry)."""
        self.failures += 1
        if self.outage is None:
            self.outage = Outage(reason, time.monotonic())
            self.log.warning("%s: %s; waiting for it, retrying with backoff up to %.0f s "
                             "(nothing is committed until it is saved and sent)",
                             self.policy.service, reason, self.policy.backoff.longest_s)
        self.outage.failures += 1

    def not_ready(self) -> str | None:
        """For /readyz: why the service is not making progress, or None."""
        return None if self.outage is None else f"waiting: {self.outage.reason}"

    def _failed(self, exc: Exception, batches: Batches, stop: threading.Event | None) -> None:
        self.stall.reset()  # an outage is the policy's to wait out, not a stuck consumer
        reason = reason_of(exc)
        if classify(self.policy, exc).action is Action.RETRY:
            self.trouble(reason)
            self._streak += 1
        outage = self.outage
        lasted = 0.0 if outage is None else time.monotonic() - outage.since
        decision = decide(self.policy, exc, per_record=False, failures=self._streak,
                          outage_s=lasted)
        if decision.action is Action.STOP:
            if decision.gave_up and outage is not None:
                raise OutageTooLong(f"gave up after {lasted:.0f} s of {outage.failures} failed "
                                    f"attempt(s): {outage.reason}") from exc
            if decision.exit_code == EXIT_BUG:
                raise exc  # the traceback is the report
            raise ServiceStopped(f"{self.policy.service} stopping: {reason}",
                                 decision.exit_code) from exc
        # Nothing of this batch is committed: read it again once the dependency is back.
        self._stale = True
        if self.policy.rewind is Rewind.BATCH and batches:
            first = {tp: records[0].offset for tp, records in batches.items() if records}
            self._rewind = {**first, **(self._rewind or {})}
        self.log.debug("%s step failed (%s); retrying in %.1f s", self.policy.service, reason,
                       decision.delay_s)
        self.watch.heartbeat.beat(self.part)  # waiting for a dependency is not being wedged
        if stop is None:
            time.sleep(decision.delay_s)
        else:
            stop.wait(decision.delay_s)

    def _read_again(self) -> None:
        """Back to where the failed batch began, never past a record that was not done."""
        assigned = self.consumer.assignment()
        if self.policy.rewind is Rewind.BATCH:
            for tp, offset in (self._rewind or {}).items():
                if tp in assigned:  # a partition taken away meanwhile: its new owner re-reads
                    self.consumer.seek(tp, offset)
        else:
            self.handler.reset()
            fresh = []
            for tp in assigned:
                committed = self.consumer.committed(tp, timeout_ms=COMMITTED_TIMEOUT_MS)
                if committed is None:
                    fresh.append(tp)
                else:
                    self.consumer.seek(tp, committed)
            if fresh:
                self.consumer.seek_to_beginning(*fresh)
        self._rewind = None
        self._stale = False

    def _recovered(self) -> None:
        self._streak = 0
        if self.outage is None:
            return
        self.log.info("%s recovered after %.0f s (%d failed attempt(s)): %s",
                      self.policy.service, time.monotonic() - self.outage.since,
                      self.outage.failures, self.outage.reason)
        self.outage = None
