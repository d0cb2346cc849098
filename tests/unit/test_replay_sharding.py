"""Replay split by linkage block must decide exactly what one pass over everything decides.

The events of tests/integration/test_audit_replay.py are turned here into the records the
correlator leaves (journal entries in feeding order, alerts encoded on `correlated`), in memory;
the broker side is tested in that file.
"""

from __future__ import annotations

import gc
import hashlib
import subprocess
import sys
import threading
from dataclasses import replace
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import pytest

from safehub.schemas.codec import decode, encode
from safehub.schemas.records import CorrelatedAlert
from safehub.schemas.vocabulary import AuditAction, Tier
from safehub.services.audit import sharding
from safehub.services.audit.journal import make_entry
from safehub.services.audit.replay import ReplayReport
from safehub.services.audit.sharding import (
    ShardJob,
    _alert_head,
    combine,
    cyclic_gc_paused,
    run_shards,
    shard_count,
    split,
)
from safehub.services.correlation.core import BlockState, initial_state, step
from safehub.services.correlation.linking import block_key
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from tests.fixtures.audit import hex_id, replay_events


class World:
    """Ingress records, the correlator's journal and its alerts for the 60 children of the
    integration test's plan, in 7 blocks (several children per block, so shards hold whole
    blocks of more than one child)."""

    def __init__(self) -> None:
        rules = load_rules(DEFAULT_RULES_PATH)
        self.ingress: dict[bytes, tuple[bytes, bytes | None]] = {}
        self.audit: list[bytes] = []
        self.alerts: list[tuple[str, bytes | None]] = []
        states: dict[int, BlockState] = {}
        for agency, event in replay_events(60):
            raw = encode(event)
            digest = hashlib.sha256(raw).digest()
            block = event.subject.linkage_block
            self.ingress[digest] = (raw, block_key(block))
            self.journal(AuditAction.EVENT_ACCEPTED, event.event_id, agency, digest,
                         event.occurred_at)
            states[block], raised = step(rules, states.get(block) or initial_state(), event)
            for alert in raised:
                self.emit(alert)

    def journal(self, action: AuditAction, subject: str, actor: str, digest: bytes,
                at: int) -> None:
        self.audit.append(encode(make_entry("correlator", action, subject, actor, digest, at)))

    def emit(self, alert: CorrelatedAlert) -> None:
        data = encode(alert)
        self.journal(AuditAction.ALERT_EMITTED, alert.alert_id, "correlator",
                     hashlib.sha256(data).digest(), alert.raised_at)
        self.alerts.append((f"0/{len(self.alerts)} on correlated", data))


def replay(world: World, shards: int, rules_file: Path | None = None,
           workers: int = 1) -> dict[str, object]:
    report = ReplayReport()
    routed = split(world.audit, world.alerts, world.ingress, shards, None, report)
    jobs = [ShardJob(s, rules_file, routed.fallback_version or "", None)
            for s in routed.shards]
    outcomes = run_shards(jobs, workers, lambda _n: None)
    override = load_rules(rules_file).version if rules_file else None
    combine(report, outcomes, len(world.ingress), override)
    out = report.as_dict()
    # Shards report in shard order; the verdicts, not their order, must agree.
    out["differences"] = sorted(out["differences"], key=repr)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_a_clean_record_matches_in_one_shard_and_in_many(world: World) -> None:
    one = replay(world, 1)
    assert one["ok"] is True and one["events_replayed"] == 120
    assert one["matches"] == one["emitted_alerts"] == 60
    assert one["unaccounted_events"] == 0
    for shards in (2, 5, 13, 64):
        assert replay(world, shards) == one


def test_differences_are_the_same_in_one_shard_and_in_many(world: World,
                                                           tmp_path: Path) -> None:
    tampered = World()
    # An altered event: its journalled digest no longer finds its bytes.
    digest = next(iter(tampered.ingress))
    raw, key = tampered.ingress.pop(digest)
    tampered.ingress[hashlib.sha256(raw + b"x").digest()] = (raw + b"x", key)
    # A record whose key is not its event's block: not the record the correlator accepted.
    digest2, (raw2, _key) = list(tampered.ingress.items())[10]
    tampered.ingress[digest2] = (raw2, block_key(12345))
    # A forged alert (journalled, so only the comparison can catch it) and an unjournalled one.
    forged = replace(decode(tampered.alerts[0][1], CorrelatedAlert), alert_id=hex_id("forged"),
                     tier=Tier.HIGH)
    tampered.emit(forged)
    tampered.alerts.append(("0/999 on correlated",
                            encode(replace(forged, alert_id=hex_id("unjournalled")))))
    tampered.alerts.append(("0/1000 on correlated", b"not an alert"))
    one = replay(tampered, 1)
    assert one["ok"] is False
    kinds = sorted(d["kind"] for d in one["differences"])  # type: ignore[attr-defined, index]
    assert kinds.count("altered-event") == 2 and "unjournalled" in kinds
    # The two children whose events were altered lose their alerts; then the forged alert, its
    # unjournalled copy and the record that is not an alert.
    assert kinds.count("unexpected") == 5
    for shards in (3, 13):
        assert replay(tampered, shards) == one

    lighter = tmp_path / "lighter.toml"
    lighter.write_text(DEFAULT_RULES_PATH.read_text().replace(
        "UNEXPLAINED_GIFTS_OR_MONEY = 2.5", "UNEXPLAINED_GIFTS_OR_MONEY = 1.0"))
    changed = replay(world, 1, lighter)
    assert changed["missing"] == changed["unexpected"] == 30 and changed["matches"] == 30
    assert replay(world, 7, lighter) == changed


def _replay_in_processes_recording_how(world: World) -> list[str]:
    """Replay with 2 worker processes, checking it agrees with one pass; the start methods used."""
    methods: list[str] = []

    def spy(method: str) -> BaseContext:
        methods.append(method)
        return get_context(method)

    real = sharding.get_context
    sharding.get_context = spy  # type: ignore[assignment]
    try:
        assert replay(world, 8, workers=2) == replay(world, 1)
    finally:
        sharding.get_context = real
    return methods


def forked_replay_agrees() -> None:
    """Run in a fresh interpreter, whose only thread is the main one (see the test below)."""
    assert threading.active_count() == 1
    assert _replay_in_processes_recording_how(World()) == ["fork"]


def test_shards_replayed_in_forked_processes_agree() -> None:
    # A fresh interpreter: earlier tests in this one may have left threads running, and then
    # run_shards rightly spawns instead of forking.
    done = subprocess.run(
        [sys.executable, "-c",
         "from tests.unit.test_replay_sharding import forked_replay_agrees as f; f()"],
        cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_with_another_thread_running_the_processes_are_spawned_and_agree(
        world: World) -> None:
    # Forking would copy the other thread's locks mid-use.
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert _replay_in_processes_recording_how(world) == ["spawn"]
    finally:
        release.set()
        other.join()


def test_an_alert_is_routed_by_the_block_and_version_it_carries(world: World) -> None:
    raw = world.alerts[3][1]
    alert = decode(raw, CorrelatedAlert)
    assert _alert_head(raw) == (alert.linkage_block, alert.rules_version)
    assert raw is not None
    for broken in (None, b"", raw[:20], raw[:12] + b"\xff" * 8, b"\xc3\x01" + b"\x00" * 8):
        assert _alert_head(broken) is None


def test_shard_count_grows_with_the_replay() -> None:
    assert shard_count(100, 2) == 8
    assert shard_count(1_000_000, 2) == 40
    assert shard_count(10**9, 2) == 1024


def test_the_garbage_collector_is_paused_only_while_replaying() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failed replay")
    assert gc.isenabled()  # restored, even after an error
    gc.disable()
    try:
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # left off if it was off before
    finally:
        gc.enable()
