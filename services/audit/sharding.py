"""Replay split by linkage block, so that it runs on every core.

Blocks never meet: `step` keeps one state per block, and an alert's id, cluster and evidence
belong to one block. Replaying and comparing block by block therefore gives the report that one
pass over everything gives, and shards can run in separate processes.

The auditor routes records to shards without decoding most of them: an ingress record by its key
(the correlator accepts only events keyed by their block), a journal entry by the digest in its
last 32 bytes, an alert by the block that follows its three leading strings. A shard decodes
everything it is given and checks what routing assumed: an event whose key is not its block is
reported as altered, never replayed under the wrong block. Records in an older schema, or not
decodable, are decoded here (or sent to shard 0 to be reported).
"""

from __future__ import annotations

import gc
import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from safehub.errors import SafehubError, ValidationError
from safehub.schemas.codec import HEADER_BYTES, decode, header_for
from safehub.schemas.prescan import Truncated, read_varint
from safehub.schemas.records import AuditEntry, CorrelatedAlert
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.replay import (
    CORRELATOR,
    Decoders,
    ReplayReport,
    alert_fingerprint,
    choose_rules,
    compare,
    correlator_entries,
    emitted_alerts,
    missing_event,
    replay_events,
)
from safehub.services.correlation.linking import subject_block
from safehub.services.correlation.rules import load_rules, rules_by_version

_VERSION = re.compile(r"[0-9a-f]{64}")
_EVENTS_PER_SHARD = 25_000  # enough shards for a progress bar that moves, and to balance cores


@dataclass(slots=True)
class Shard:
    """The records of some linkage blocks, each list in the order it was read."""

    entries: list[bytes] = field(default_factory=list)  # journal entries, in journal order
    ingress: dict[bytes, tuple[bytes, bytes | None]] = field(default_factory=dict)
    alerts: list[tuple[str, bytes | None, bool]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Split:
    shards: list[Shard]
    fallback_version: str | None  # rules version of the last alert read (see choose_rules)


@dataclass(frozen=True, slots=True)
class ShardJob:
    shard: Shard
    rules_file: Path | None  # --rules: replay with this file instead of each alert's version
    fallback_version: str
    from_ms: int | None


@dataclass(slots=True)
class ShardOutcome:
    report: ReplayReport
    fingerprints: dict[str, str]  # alert id -> alert_fingerprint, for every replayed alert
    journalled_events: int  # distinct ingress records this shard's journal entries name
    rules_versions: set[str]


def shard_count(ingress_records: int, workers: int) -> int:
    return min(1024, max(4 * workers, -(-ingress_records // _EVENTS_PER_SHARD)))


def split(audit: Iterable[bytes], alerts: Iterable[tuple[str, bytes | None]],
          ingress: Mapping[bytes, tuple[bytes, bytes | None]], count: int,
          from_ms: int | None, report: ReplayReport) -> Split:
    """Route the snapshot's records to `count` shards by linkage block.

    `ingress` maps each ingress record's SHA-256 to its (value, key); `alerts` are the records
    of `correlated` as (where, value). Journalled events found on no ingress record are
    reported here (unless replaying from a time, when older events are expected to be absent).
    """
    shards = [Shard() for _ in range(count)]
    home: dict[bytes, int] = {}
    for digest, (value, key) in ingress.items():
        block = int.from_bytes(key, "big") if key is not None and len(key) == 4 else 0
        home[digest] = block % count
        shards[block % count].ingress[digest] = (value, key)

    entry_header = header_for(AuditEntry)
    journalled_alerts: set[bytes] = set()
    for raw in audit:
        # The digest is the entry's last field: 32 bytes at the very end.
        where = home.get(raw[-32:]) if raw[:HEADER_BYTES] == entry_header else None
        if where is not None:
            shards[where].entries.append(raw)
            continue
        try:
            entry = decode(raw, AuditEntry)
        except ValidationError:
            continue  # verify reports undecodable entries
        if entry.service != CORRELATOR:
            continue
        if entry.action == AuditAction.EVENT_ACCEPTED:
            where = home.get(entry.digest)
            if where is not None:
                shards[where].entries.append(raw)
            elif from_ms is None:
                report.differences.append(missing_event(entry))
        elif entry.action == AuditAction.ALERT_EMITTED:
            journalled_alerts.add(entry.digest)
        elif entry.action == AuditAction.BLOCK_STATE_RESET:
            # About a block, not an ingress record: routed by the block it names (shard 0
            # reports one that names none).
            shards[(subject_block(entry.subject_id) or 0) % count].entries.append(raw)

    fallback = None
    for where_read, alert_raw in alerts:
        head = _alert_head(alert_raw)
        block = 0
        if head is not None:
            block, version = head
            fallback = version
        journalled = (alert_raw is not None
                      and hashlib.sha256(alert_raw).digest() in journalled_alerts)
        shards[block % count].alerts.append((where_read, alert_raw, journalled))
    return Split(shards, fallback)


def _alert_head(raw: bytes | None) -> tuple[int, str] | None:
    """(linkage block, rules version) of an alert, from its leading fields (alert id, rules
    version, cluster id, linkage block), or None if they cannot be read that way."""
    if raw is None:
        return None
    if raw[:HEADER_BYTES] != header_for(CorrelatedAlert):
        try:  # an older schema: decode it whole
            alert = decode(raw, CorrelatedAlert)
        except ValidationError:
            return None
        return alert.linkage_block, alert.rules_version
    body = raw[HEADER_BYTES:]
    strings = []
    pos = 0
    try:
        for _ in range(3):
            size, pos = read_varint(body, pos, "alert")
            if size < 0:
                return None
            strings.append(body[pos:pos + size])
            pos += size
        block, _ = read_varint(body, pos, "alert")
    except (Truncated, ValidationError):
        return None
    version = strings[1].decode("ascii", "replace")
    if block < 0 or not _VERSION.fullmatch(version):
        return None
    return block, version


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while.

    Replay builds millions of objects (records, events, states, alerts) that live until it ends
    and hold no reference cycles. The collector re-walked all of them at each of its full
    passes, which grow with them: about a fifth of a 60,000-event replay's time. Plain
    reference counting still frees everything else as it goes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay_shard(job: ShardJob) -> ShardOutcome:
    """Decode, replay and compare one shard: everything `safehub audit replay` decides, for the
    shard's blocks. Pure apart from reading rules files."""
    with cyclic_gc_paused():
        return _replay_shard(job)


def contract_decoders() -> Decoders:
    """The replay core's decoders: the contract's codec."""
    return Decoders(audit_entry=lambda raw: decode(raw, AuditEntry),
                    alert=lambda raw: decode(raw, CorrelatedAlert),
                    event=lambda raw: decode(raw))


def _replay_shard(job: ShardJob) -> ShardOutcome:
    report = ReplayReport()
    decoders = contract_decoders()
    entries, _ = correlator_entries(job.shard.entries, decoders)
    emitted = emitted_alerts(job.shard.alerts, report, decoders)
    if job.from_ms is not None:
        # A partial replay: only alerts the events read can have raised.
        emitted = [a for a in emitted if a.raised_at >= job.from_ms]
    override = load_rules(job.rules_file) if job.rules_file is not None else None
    rules_for = choose_rules(emitted, override, rules_by_version, job.fallback_version)
    replayed = replay_events(entries, job.shard.ingress, rules_for, report, decoders)
    compare(replayed, emitted, report, other_rules=override is not None)
    return ShardOutcome(report, {a.alert_id: alert_fingerprint(a) for a in replayed},
                        len({e.digest for e in entries
                             if e.action != AuditAction.BLOCK_STATE_RESET}),
                        {a.rules_version for a in emitted})


def combine(report: ReplayReport, outcomes: Iterable[ShardOutcome], indexed: int,
            override_version: str | None) -> dict[str, str]:
    """Fold the shards' outcomes into `report` (whose `indexed` ingress records were routed);
    return the fingerprints of every replayed alert, by alert id."""
    fingerprints: dict[str, str] = {}
    versions: set[str] = set()
    journalled = 0
    for outcome in outcomes:
        part = outcome.report
        report.differences += part.differences
        report.events_replayed += part.events_replayed
        report.replayed_alerts += part.replayed_alerts
        report.emitted_alerts += part.emitted_alerts
        report.matches += part.matches
        report.blocks_reset += part.blocks_reset
        fingerprints.update(outcome.fingerprints)
        versions |= outcome.rules_versions
        journalled += outcome.journalled_events
    report.unaccounted_events = indexed - journalled
    report.rules_versions = sorted({override_version} if override_version else versions)
    return fingerprints


_JOBS: Sequence[ShardJob] = ()  # in a worker process: the jobs, inherited from the parent


def _install(jobs: Sequence[ShardJob]) -> None:
    global _JOBS
    _JOBS = jobs


def _replay_job(index: int) -> ShardOutcome:
    return replay_shard(_JOBS[index])


def run_shards(jobs: Sequence[ShardJob], workers: int, progress: Callable[[int], None]
               ) -> list[ShardOutcome]:
    """Every job's outcome, in the order of `jobs` (so the report does not depend on which
    process finished first), replayed by `workers` processes (one: in this process).

    The processes are forked once everything is read and split, and find the jobs in the memory
    they inherit: nothing is pickled to them, and they import nothing. Spawned processes cost a
    fresh interpreter importing the core each, competing with the reading for the same two
    cores, then the shards pickled to them, and their shutdown: a 60,000-event replay took
    2.3 s forked against 2.65 s spawned. Forking is safe only with no other thread running (a
    thread's lock would be copied held); Kafka clients are closed by then, and if some thread
    is still alive the processes are spawned instead (each is then sent every job).
    """
    if workers <= 1 or len(jobs) <= 1:
        outcomes = []
        for job in jobs:
            outcomes.append(replay_shard(job))
            progress(len(job.shard.entries))
        return outcomes
    fork = "fork" in get_all_start_methods() and threading.active_count() == 1
    pool = ProcessPoolExecutor(min(workers, len(jobs)),
                               mp_context=get_context("fork" if fork else "spawn"),
                               initializer=_install, initargs=(jobs,))
    try:
        futures = {pool.submit(_replay_job, i): len(job.shard.entries)
                   for i, job in enumerate(jobs)}
        for done in as_completed(futures):
            progress(futures[done])
        return [f.result() for f in futures]
    except BrokenProcessPool as exc:
        raise SafehubError("a replay worker process died; nothing was compared") from exc
    finally:
        pool.shutdown(cancel_futures=True)
