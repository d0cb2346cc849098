"""faust's aiokafka transport with a short fetch wait, every partition read in order, and each
ingress partition handed to faust a fair share at a time (fairness.py).

faust-streaming builds its aiokafka consumer with `fetch_max_wait_ms=1500`, fixed in its
driver. aiokafka keeps at most one fetch in flight per broker and leaves out of it every
partition whose records are still buffered; so after the worker takes a batch from the busy
partitions, the fetch already in flight asks only for the quiet ones and the broker holds it
for up to 1.5 s before the busy partitions can be fetched again. Measured at 1,000 events/s in
bench/latency_bench.py: batches waited up to 2-3 s for records already on the broker. Here the
wait is FETCH_MAX_WAIT_MS; an idle worker then sends a few more (empty) fetches a second.

Reading in order. The correlator's state of a block must hold every event of the block's
partition before the next one is correlated: the auditors' replay follows the journal, and an
event correlated ahead of an earlier one it never saw raises different alerts. faust can skip
records without noticing:
- its `getmany` stops iterating a fetched batch when a rebalance starts and drops the rest,
  while aiokafka's position has already moved past them;
- after the rebalance it seeks back to the committed offsets, but aiokafka's
  `seek_to_committed` seeks only partitions whose committed offset is above 0, so a partition
  with no commit yet carries on from the moved position.
Seen in CI: a restarted worker correlated offsets 0-13 and then 57 onwards of every partition,
so events the killed worker had journalled but not saved were overtaken by later ones. Here
each partition's next offset is known (`NextOffsets`): a record past it is not delivered, and
the partition is sought back to it; and partitions without a committed offset are sought to
their beginning after every rebalance, as the committed ones are to their commit.

No pausing under pressure. When the stream's queue fills, faust takes the partition out of
the active ones (conductor.py's on_pressure_high) until the queue has drained (on_buffer_drop),
and a round that finds no partition active sleeps a whole second. With the fair share's
rounds of at most a share of each partition, every ingress partition was paused at the end of
nearly every round of a catch-up: a round every ~0.3 s, then ~1.2 s lost every few rounds
(timed per round in session 26); 60,000 events took ~18 s instead of ~13. The pause is not
needed here: the fair share already bounds what a round hands over, and faust's put into a
full queue waits for room. Ingress partitions are therefore never paused for pressure.

Handing over. faust's fetch loop races each record's hand-over against the flow's suspension
through `wait_first`, four tasks a record; `PromptConsumer.wait_first` runs a hand-over that
does not wait without them (handoff.py). A record that cannot be an event is not handed to
faust's channels at all: `getmany` takes it into the refusals lane (refusals.py), with the
bookkeeping faust's fetch loop would have done for it (tracked until acked, its partition's
read offset moved), so that faust's commits and gaps treat it as a record handed on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiokafka
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import IllegalStateError
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

from safehub.services.correlator import committed, faust_contract, handoff, membership
from safehub.services.correlator.fairness import SHARE, FairShare
from safehub.services.correlator.in_flight import InFlight
from safehub.services.correlator.log_end import log_ends
from safehub.services.correlator.processing import Incoming
from safehub.services.correlator.refusals import Refusals
from safehub.services.correlator.suspicion import Suspicion

# Before anything below is used: on a faust or aiokafka these corrections were not checked
# against, they could silently not apply (faust_contract.py).
faust_contract.check()

log = logging.getLogger(__name__)
FETCH_MAX_WAIT_MS = 100
MARKER_CHECK_S = 0.25


class PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        # faust builds it with the app's broker_credentials (SASL_SSL, the correlator's
        # principal: app.py), for the ingress topics and the table's recovery alike.
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads these when the consumer starts and builds its fetcher. The table's
        # changelog is written in transactions (outputs.py): recovery must not apply the states
        # of an aborted one.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._isolation_level = "read_committed"
        consumer._group_instance_id = transport.group_instance_id
        return consumer

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        # faust asks only for its recoveries' targets: the changelog's end with open
        # transactions counted, not the last stable offset the consumer would answer with.
        return await log_ends(self._ensure_consumer(), partitions)


class NextOffsets:
    """The offset each partition must deliver next, and what to do with a record that is not it.

    `admit` returns the offset to re-read the partition from when records before this one were
    skipped. The log itself may have no record at an offset (a transaction marker, compaction):
    then re-reading finds the same hole again, and the second time it is let through, and
    remembered until the commit point takes it (`take_hole_at`, `take_hole_before`).
    """

    def __init__(self) -> None:
        self._next: dict[Any, int] = {}
        self._reread: dict[Any, int] = {}  # partition -> the offset it was sought back to
        # Holes found in the log: (partition, the offset let through) -> the hole's first offset.
        self._holes: dict[tuple[Any, int], int] = {}

    def take_hole_at(self, tp: Any, offset: int) -> tuple[int, int] | None:
        """The hole in the log of `tp` that holds `offset`, as (first, end), end excluded, and
        forgotten: the caller records it as a gap."""
        for (held_tp, after), first in self._holes.items():
            if held_tp == tp and first <= offset < after:
                del self._holes[(held_tp, after)]
                return first, after
        return None

    def take_hole_before(self, tp: Any, offset: int) -> bool:
        """Whether the log of `tp` has a hole that ends where `offset` was let through, then
        forgotten: the caller records it as a gap."""
        return self._holes.pop((tp, offset), None) is not None

    def reset(self, tp: Any, offset: int) -> None:
        self._next[tp] = offset

    def keep_only(self, tps: set[Any]) -> None:
        """Forget partitions no longer assigned."""
        for tp in [tp for tp in self._next if tp not in tps]:
            del self._next[tp]
            self._reread.pop(tp, None)
        for key in [key for key in self._holes if key[0] not in tps]:
            del self._holes[key]

    def admit(self, tp: Any, offset: int) -> int | None:
        expected = self._next.get(tp)
        if expected is not None and offset > expected:
            if self._reread.get(tp) != expected:
                self._reread[tp] = expected
                return expected
            self._holes[(tp, offset)] = expected
        self._reread.pop(tp, None)
        if expected is None or offset >= expected:
            self._next[tp] = offset + 1
        return None


def recovery_complete(last: int, applied: int | None, fetched: int | None,
                      read_to: int | None) -> bool:
    """Whether a changelog partition whose last offset `last` is a transaction marker (or a
    record of a transaction that turned out aborted) is recovered: fetches have read past
    `last` (`read_to`, the position after them), and recovery has applied the last record they
    returned (`fetched`), if they returned any. While a transaction is open, a committed read
    stops at its first offset, at or before `last` (log_end.py)."""
    if read_to is None or read_to <= last:
        return False
    return fetched is None or applied == fetched


class PromptConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.next_offsets = NextOffsets()
        # Records refused whatever else holds, taken out of faust's per-record path
        # (refusals.py); the app dead-letters them in batches of their own.
        self.refusals = Refusals()
        # What the commit must not pass, now that acks within a partition may come out of
        # order (in_flight.py).
        self.in_flight = InFlight()
        # Which records of a flood made to pass the cheap look go to the lane too.
        self.suspicion = Suspicion(getattr(self.transport, "refused_at_any_time", None))
        # Of the ingress partitions (fairness.py); the transport says how large a share is.
        self.fair_share = FairShare(getattr(self.transport, "fair_share", SHARE),
                                    urgent=self.suspicion.may_be_event)
        # Per changelog partition: the last record's offset fetched, and the position after
        # the last fetch during recovery.
        self._fetched: dict[Any, int] = {}
        self._read_to: dict[Any, int | None] = {}

    def suspect(self, tp: tuple[str, int], count: int) -> None:
        """A batch refused `count` records of `tp` that passed the cheap look (suspicion.py); if
        that makes the partition suspected, what it holds is judged again."""
        if self.suspicion.refused(tp, count):
            self.fair_share.judge_again(tp)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def on_buffer_full(self, tp: Any) -> None:
        if not self.app.topics.acks_enabled_for(tp.topic):
            super().on_buffer_full(tp)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        if active_partitions is None:  # a client-only app: faust's own behaviour
            return await super()._getmany(active_partitions, timeout)
        acked = self.app.topics.acks_enabled_for
        share = self.fair_share
        assigned = self.assignment()
        share.keep_only(assigned)
        self._forget(self.refusals.keep_only(assigned))
        active = set(active_partitions)
        # A partition holding its most is not fetched until some are handed over; with some
        # held, what aiokafka has already buffered is taken without waiting for more.
        ask = active - share.full()
        wait = 0 if share.holding() & active else timeout
        records = await super()._getmany(ask, wait) if ask else {}
        for tp, fetched in records.items():
            if fetched and not acked(tp.topic):
                self._fetched[tp] = fetched[-1].offset
        tables: Any = self.app.tables  # TableManager; its type stub lacks `recovery`
        if tables.recovery.in_recovery:
            # Fetches run one at a time and positions move as they return records (or by a
            # seek, after which the next fetch refreshes these), so each holds until the next.
            assigned = self.assignment()
            for tp in list(tables.recovery.active_highwaters):
                try:
                    self._read_to[tp] = await self.position(tp) if tp in assigned else None
                except IllegalStateError:  # revoked meanwhile: recovery restarts after it
                    self._read_to[tp] = None
        # Only ingress records are shared out: the changelog's, read in recovery, go as fetched.
        out: dict[Any, Any] = {}
        ingress: dict[Any, Any] = {}
        for tp, fetched in records.items():
            (ingress if acked(tp.topic) else out)[tp] = fetched
        for tp, fetched in ingress.items():
            if fetched and self.suspicion.sample(tp, fetched):
                self.fair_share.judge_again(tp)
        out.update(share.take(ingress, [tp for tp in active if acked(tp.topic)],
                              self.refusals.room()))
        return out

    def _forget(self, messages: Sequence[Any]) -> None:
        """Messages taken into the refusals lane and dropped from it unrefused: their partition
        is read again from an earlier offset, or is no longer this worker's."""
        for message in messages:
            self._unacked_messages.discard(message)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        # faust's fetch loop hands each record to the channels through this (handoff.py).
        if (timeout is None and len(coros) == 2 and not self.should_stop
                and not self.suspend_flow.is_set()
                and handoff.is_wait_of(coros[1], self.suspend_flow)):
            return await handoff.hand_over(super().wait_first, coros[0], coros[1])
        return await super().wait_first(*coros, timeout=timeout)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        acked = self.app.topics.acks_enabled_for  # ingress yes; the table's changelog no
        holes: set[Any] = set()
        diverted = 0
        async for tp, message in super().getmany(timeout):
            if tp in holes:
                continue  # the rest of this partition's batch comes again after the seek
            if acked(tp.topic):
                reread_from = self.next_offsets.admit(tp, message.offset)
                if reread_from is not None:
                    log.warning("%s[%d]: offset %d delivered before %d-%d; re-reading from %d",
                                tp.topic, tp.partition, message.offset, reread_from,
                                message.offset - 1, reread_from)
                    holes.add(tp)
                    await self.seek(tp, reread_from)
                    continue
                if self.suspicion.to_lane(message):
                    await self._refuse(tp, message)
                    diverted += 1
                    if not diverted % 100:
                        await asyncio.sleep(0)  # a lane round can be thousands of records
                    continue
                read = self._read_offset[tp]
                if read is None or message.offset >= read:  # else faust's loop drops it
                    self.in_flight.handed(tp, message.offset)
            yield tp, message

    async def _refuse(self, tp: Any, message: Any) -> None:
        """Into the refusals lane, with the bookkeeping faust's fetch loop does for a message it
        hands to the agent (`Consumer._drain_messages`): a gap in the log before it, the
        message tracked until acked, and the partition's read offset."""
        read = self._read_offset[tp]
        if read is not None and message.offset < read:
            return  # faust's loop drops it too: already read
        if read and message.offset - read > 1:
            await self._add_gap(tp, read + 1, message.offset)
        self.track_message(message)
        self.in_flight.handed(tp, message.offset)
        self.refusals.add(message)
        self._read_offset[tp] = message.offset

    def ack(self, message: Any) -> bool:
        done: bool = super().ack(message)
        self.in_flight.acked(message.tp, message.offset)
        return done

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Not left for faust's wait_empty to refuse first: the new owner reads them again, and
        # the commit stops short of them (in_flight.py).
        self._forget(self.refusals.drop(revoked))
        await super().on_partitions_revoked(revoked)

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        self.next_offsets.reset(partition, offset)
        self.fair_share.drop(partition)
        self._forget(self.refusals.drop({partition}, offset))
        self.in_flight.forget_from(partition, offset)
        self.suspicion.forget({partition})

    async def perform_seek(self) -> None:
        """Seek every ingress partition to its committed offset, or its beginning if none."""
        self.fair_share.clear()
        self._forget(self.refusals.keep_only(()))
        self.in_flight.forget()
        self.suspicion.forget()
        await super().perform_seek()  # aiokafka seeks only commits above 0
        acked = self.app.topics.acks_enabled_for
        tps = {tp for tp in self.assignment() if acked(tp.topic)}
        self.next_offsets.keep_only(tps)
        unsought = [tp for tp in tps if not self._committed_offset.get(tp)]
        earliest = await self.earliest_offsets(*unsought) if unsought else {}
        for tp in tps:
            committed = self._committed_offset.get(tp)
            if committed:
                self.next_offsets.reset(tp, committed)
            elif tp in earliest:
                await self.seek(tp, earliest[tp])

    @Service.task
    async def _recover_past_markers(self) -> None:
        """Let table recovery end when only transaction markers are left to read.

        The changelog is written in transactions (outputs.py), so each partition ends with a
        commit or abort marker: an offset that holds no record. faust's recovery waits to have
        applied the partition's last offset, which it never gets, and would wait forever. faust
        has a check for its own transactions (`detect_aborted_tx` in faust.tables.recovery),
        run only in its exactly_once mode, which the correlator does not use.

        aiokafka's position passes the marker as soon as the last records are fetched, while
        faust may still have thousands of them queued to apply. Ending recovery on the position
        alone (as this did until CI caught it in test_correlator_recovery.py) let the worker
        correlate on states that lacked events the journal showed accepted. So recovery is
        ended here only once a fetch has passed the marker and recovery has applied the last
        record the fetches returned (`recovery_complete`).

        Nor does faust see that it is done before its changelog queue has been empty for 5 s
        (`_slurp_changelogs` checks only then, or after an event, and a marker is no event):
        every start and rebalance of a worker waited those seconds (6-7 s from "recovered up
        to its transaction marker" to "tables recovered" in bench/fault_bench.py's logs). So
        once no partition is left to recover, recovery is ended here as that check ends it.
        A task of the consumer, because the app's timers start only after the first recovery.
        """
        while not self.should_stop:
            await self.sleep(MARKER_CHECK_S)
            tables: Any = self.app.tables  # TableManager; its type stub lacks `recovery`
            recovery = tables.recovery
            if not recovery.in_recovery:
                continue
            offsets = recovery.active_offsets
            passed = False
            for tp, last in list(recovery.active_highwaters.items()):
                applied = offsets.get(tp)
                if last is None or (applied is not None and applied >= last):
                    continue
                if recovery_complete(last, applied, self._fetched.get(tp), self._read_to.get(tp)):
                    log.info("%s[%d]: recovered up to its transaction marker at %d",
                             tp.topic, tp.partition, last)
                    offsets[tp] = last
                    passed = True
            if passed and not recovery.need_recovery():
                # What faust's own check does (`_maybe_signal_recovery_end`): apply what is
                # buffered, then let recovery's waiter go on.
                recovery.flush_buffers()
                recovery._set_recovery_ended()
                recovery.signal_recovery_end.set()

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit: only once the message at the committed offset is done.

        faust's own holds its commit when the first acked offset is more than one past the
        committed offset, which is the next one to read: a single message lost inside faust
        (neither acked nor a gap in the log) was committed past on the next tick, and never
        correlated, without a word (found in review, session 29; holes of two or more held the
        commit). Here the commit moves only when the message at the committed offset is acked
        or the log has no record there: a gap faust reported (`_add_gap`), or a hole NextOffsets
        found, which faust does not report when it is right at the offset it read from (a
        transaction marker just after the last commit, met after a seek). Otherwise it holds,
        and stalls.StallWatch re-reads the partition from there. Nor does it pass a message
        handed on and not yet acked (in_flight.py).
        """
        first = self.in_flight.first(tp)
        acked = self._acked.get(tp)
        if first is not None and acked and first < min(acked):
            return None  # handed on, not yet acked, and faust would commit past it
        committed = self._committed_offset.get(tp)
        if committed is not None and committed not in self._acked_index.get(tp, ()):
            gaps = self._gap[tp]
            if not gaps.overlaps(committed):
                hole = self.next_offsets.take_hole_at(tp, committed)
                if hole is None:
                    return None
                gaps.addi(*hole)
        result: int | None = super()._new_offset(tp)
        return result

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Treat skipped offsets as done only when the log has no record there.

        faust counts offsets it never received as acknowledged ("gaps", for compacted or
        transactional topics), so its commit moves past them. A hole that NextOffsets did not
        find in the log itself is messages lost inside faust: seen in
        tests/integration/test_correlator_workers.py, two events committed past and never
        correlated. Left unrecorded, the gap holds the commit at the first missing offset, and
        stalls.StallWatch re-reads the partition from there.
        """
        if self.next_offsets.take_hole_before(tp, offset_to):
            # faust's own starts a gap no earlier than one past the committed offset: a hole at
            # the committed offset itself would then hold the commit for good (`_new_offset`).
            committed = self._committed_offset.get(tp)
            start = offset_from if committed is None else max(offset_from, committed)
            if start <= offset_to:
                self._gap[tp].addi(start, offset_to + 1)  # intervals exclude their end
            return
        log.warning("%s[%d]: offsets %d-%d skipped by the consumer; not committing past them",
                    tp.topic, tp.partition, offset_from, offset_to)


class PromptTransport(faust_aiokafka.Transport):
    Consumer = PromptConsumer
    group_instance_id: str | None = None
    fair_share: int = SHARE
    refused_at_any_time: Callable[[Incoming], bool] | None = None


def static_member_id(worker_id: str, topics: Sequence[str]) -> str:
    """The worker's group instance id: its worker id and the set of topics it reads.

    A static member that rejoins is given its previous assignment without a rebalance, even if
    it now subscribes to more topics: a worker restarted to read a new agency's topic would
    never be assigned it (seen in tests/integration/test_correlator_onboarding.py). Naming the
    topic set makes such a worker a new member, whose joining shares the partitions out again.
    """
    digest = hashlib.sha256("\n".join(sorted(topics)).encode()).hexdigest()[:12]
    return f"{worker_id}-{digest}"


def install(app: Any, group_instance_id: str | None = None, fair_share: int = SHARE,
            refused_at_any_time: Callable[[Incoming], bool] | None = None) -> None:
    """Give `app` the prompt transport; call before anything asks the app for topics.

    With a `group_instance_id` the worker is a static member of its consumer group (KIP-345):
    restarted within the session timeout, it takes its own place back at once, where an
    anonymous worker waits for the group to time its killed predecessor out (10 s). The price:
    a stopped static member's partitions also wait for its session to expire before moving to
    the other workers, as it does not leave the group."""
    membership.watch(GroupCoordinator)  # what outputs.py asks before each commit
    committed.check_group_errors(GroupCoordinator)  # a coordinator's error is not "no offset"
    app.transport = PromptTransport(app.conf.broker_consumer, app)
    app.transport.group_instance_id = group_instance_id
    app.transport.fair_share = fair_share
    app.transport.refused_at_any_time = refused_at_any_time
