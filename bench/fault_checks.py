"""What the fault run publishes and how its outcome is judged (bench/fault_bench.py).

The population: children spread over linkage blocks, a dozen events each from three agencies,
every event carrying the child's NHS-number key and all of a child's events within 25 days, so
that a child's final alerts do not depend on the order the correlator happens to see them in
(the same design as the correlator recovery tests). Judging reads only what is on the topics and
in the inbox database, and re-derives the expected alerts with the pure core from the events
actually on the ingress topics.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehub.samples import population as sample_population
from safehub.schemas.codec import decode
from safehub.schemas.records import (
    CorrelatedAlert,
    IngressEvent,
    MissingEpisodeEvent,
    RoutedAlert,
    WarningSignEvent,
)
from safehub.schemas.validation import LINKAGE_BLOCKS
from safehub.schemas.vocabulary import Sector
from safehub.services.audit.reading import Record
from safehub.services.correlation.core import BlockState, initial_state, standing_alerts, step
from safehub.services.correlation.rules import Rules

AGENCIES = {"police-fault": Sector.POLICE, "health-fault": Sector.HEALTH,
            "school-fault": Sector.EDUCATION}
# deploy/routing.toml routes the population's local authority (E08000035, Leeds) here.
HUB = "csc-leeds"
EVENTS_PER_CHILD = 12


def population(events: int, seed: int, t0_ms: int) -> list[IngressEvent]:
    """`events` events (a dozen per child, the last child what is left), shuffled, all within
    25 days after `t0_ms` (safehub.samples.population)."""
    children = max(1, -(-events // EVENTS_PER_CHILD))
    counts = [min(EVENTS_PER_CHILD, events - c * EVENTS_PER_CHILD) for c in range(children)]
    return sample_population.population(AGENCIES, counts, seed, t0_ms, LINKAGE_BLOCKS)


def expected_tiers(rules: Rules, events: Iterable[IngressEvent]) -> dict[str, int]:
    """Child cluster -> the tier rank of its final alert, from the pure core."""
    states: dict[int, BlockState] = defaultdict(initial_state)
    for e in events:
        block = e.subject.linkage_block
        states[block], _ = step(rules, states[block], e)
    return {a.cluster_id: a.tier.rank
            for block, state in states.items() for a in standing_alerts(rules, block, state)}


def peak_tiers(alerts: Iterable[CorrelatedAlert]) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for a in alerts:
        peaks[a.cluster_id] = max(peaks.get(a.cluster_id, 0), a.tier.rank)
    return peaks


def tier_mismatches(expected: dict[str, int], got: dict[str, int]) -> list[str]:
    """Children whose highest delivered tier is not the core's final one (or is missing)."""
    return sorted(c for c in set(expected) | set(got) if expected.get(c) != got.get(c))


@dataclass
class Verdict:
    """Every check's figures; `problems` says in words what failed."""

    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def judge(rules: Rules, acked: set[str], ingress: Sequence[Record], correlated: Sequence[Record],
          routed: Sequence[Record], inbox_db: Path) -> Verdict:
    """No acknowledged event lost, every event's effect on `correlated`, on the hub's topic and
    in its inbox, no second version of an alert, no duplicate inbox row."""
    v = Verdict()
    records = [decode(r.value) for r in sorted(ingress, key=lambda r: (r.timestamp_ms, r.topic,
                                                                       r.partition, r.offset))]
    events = [e for e in records if isinstance(e, WarningSignEvent | MissingEpisodeEvent)]
    v.expect(len(events) == len(records), "records on ingress that are not events")
    ids = Counter(e.event_id for e in events)
    v.figures["events_on_ingress"] = len(events)
    v.figures["distinct_events_on_ingress"] = len(ids)
    v.figures["acknowledged_events_missing_from_ingress"] = len(acked - set(ids))
    v.expect(acked <= set(ids), "acknowledged events missing from the ingress topics")
    expected = expected_tiers(rules, events)
    v.figures["children_with_a_final_alert"] = len(expected)

    versions: dict[str, set[bytes]] = defaultdict(set)
    for r in correlated:
        versions[decode(r.value, CorrelatedAlert).alert_id].add(r.value or b"")
    conflicting = sum(len(vals) > 1 for vals in versions.values())
    v.figures["on_correlated"] = {
        "records": len(correlated), "alert_ids": len(versions),
        "records_repeated": len(correlated) - len(versions),
        "alert_ids_with_two_versions": conflicting}
    v.expect(conflicting == 0, f"{conflicting} alert ids on `correlated` with two versions")
    on_correlated = tier_mismatches(
        expected, peak_tiers(decode(next(iter(vals)), CorrelatedAlert)
                             for vals in versions.values()))
    v.figures["on_correlated"]["children_tier_mismatch"] = len(on_correlated)
    v.expect(not on_correlated, f"{len(on_correlated)} children's highest tier on `correlated` "
                                "is not the core's final tier")

    notes = [decode(r.value, RoutedAlert) for r in routed]
    note_ids = Counter(n.notification_id for n in notes)
    on_hub_topic = tier_mismatches(expected, peak_tiers(n.alert for n in notes))
    v.figures["hub_topic"] = {
        "records": len(notes), "notifications": len(note_ids),
        "notifications_sent_more_than_once": sum(c > 1 for c in note_ids.values()),
        "children_tier_mismatch": len(on_hub_topic)}
    v.expect(not on_hub_topic, f"{len(on_hub_topic)} children's highest tier on the hub's "
                               "topic is not the core's final tier")

    rows = inbox_rows(inbox_db)
    alert_rows = Counter(r[1] for r in rows)
    duplicates = sum(c - 1 for c in alert_rows.values() if c > 1)
    in_inbox = tier_mismatches(expected, inbox_peaks(rows))
    missing_notes = set(note_ids) - {r[0] for r in rows}
    v.figures["inbox"] = {
        "rows": len(rows), "duplicate_alert_rows": duplicates,
        "notifications_not_stored": len(missing_notes),
        "children_tier_mismatch": len(in_inbox)}
    v.expect(duplicates == 0, f"{duplicates} duplicate alert rows in the inbox")
    v.expect(not missing_notes, f"{len(missing_notes)} notifications on the hub's topic are "
                                "not in its inbox")
    v.expect(not in_inbox, f"{len(in_inbox)} children's highest tier in the inbox is not the "
                           "core's final tier")
    v.figures["mismatches"] = len(on_correlated) + len(on_hub_topic) + len(in_inbox)
    v.figures["duplicates"] = duplicates + conflicting
    return v


TIER_RANK = {"EMERGING": 1, "ESCALATING": 2, "HIGH": 3}


def inbox_rows(db: Path) -> list[tuple[str, str, str, str]]:
    """(notification id, alert id, cluster id, tier) of every inbox row, read-only."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in conn.execute(
            "SELECT notification_id, alert_id, cluster_id, tier FROM inbox_alert")]


def inbox_peaks(rows: Iterable[tuple[str, str, str, str]]) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for _, _, cluster, tier in rows:
        peaks[cluster] = max(peaks.get(cluster, 0), TIER_RANK[tier])
    return peaks


def inbox_count(db: Path) -> int | None:
    """Rows in the inbox so far (None before the inbox has made its tables)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM inbox_alert").fetchone()[0])
    except sqlite3.Error:
        return None


Sample = tuple[float, dict[tuple[str, int], int], int | None]  # (t, committed offsets, rows)


def recovery(samples: Sequence[Sample], at: float, window_s: float = 120.0) -> dict[str, Any]:
    """After a kill at `at`: how long until the correlator's committed output moved again
    (any partition), until every partition that moved later had moved (the killed worker's
    too), and until the inbox gained a row. None: not within the window."""
    before = [s for s in samples if s[0] <= at]  # no offsets yet: nothing committed
    after = [s for s in samples if at < s[0] <= at + window_s]
    if not before or not after:
        return {"output_s": None, "all_partitions_s": None, "inbox_s": None}
    base, rows0 = before[-1][1], before[-1][2] or 0
    output = next((s[0] - at for s in after
                   if sum(s[1].values()) > sum(base.values())), None)
    moved: dict[tuple[str, int], float] = {}
    for t, offsets, _ in after:
        for tp, off in offsets.items():
            if tp not in moved and off > base.get(tp, -1):
                moved[tp] = t - at
    inbox = next((s[0] - at for s in after if (s[2] or 0) > rows0), None)
    return {"output_s": _r(output), "all_partitions_s": _r(max(moved.values(), default=None)),
            "inbox_s": _r(inbox)}


# (t, the partitions then below min.insync.replicas or without a leader, as "topic[partition]")
IsrSample = tuple[float, tuple[str, ...]]


def below_min_isr(samples: Sequence[IsrSample], at: float, stall_s: float | None,
                  window_s: float = 120.0) -> dict[str, Any]:
    """Of the output's stall after a kill at `at` (`stall_s`, as `recovery` found it; the
    window when it did not move again), how many seconds some partition was below
    min.insync.replicas or without a leader, where no acks=all write completes, a transaction's
    included; and the most such partitions at once. Nearly the whole stall: the cluster's;
    little of it: the pipeline's. A killed broker counts only once its session has expired
    (broker.session.timeout.ms): until then the metadata still names it in the ISRs."""
    end = at + (window_s if stall_s is None else stall_s)
    during = [(t, below) for t, below in samples if at <= t <= end]
    # Each sample holds until the next, the last until the stall's end (none sampled: none).
    ends = [t for t, _ in during[1:]] + [end]
    seconds = sum(until - t for (t, below), until in zip(during, ends, strict=False) if below)
    return {"below_min_isr_s": round(seconds, 1),
            "below_min_isr_most": max((len(b) for _, b in during), default=0)}


def isr_timeline(samples: Sequence[IsrSample], t0: float) -> list[tuple[float, int]]:
    """(s since t0, partitions below min.insync.replicas) at each change: the run's record."""
    timeline: list[tuple[float, int]] = []
    for t, below in samples:
        if not timeline or timeline[-1][1] != len(below):
            timeline.append((round(t - t0, 1), len(below)))
    return timeline


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
