"""The correlation core: `step(rules, state, event) -> (state, alerts)`, pure and deterministic.

One `BlockState` holds everything known about the children of one linkage block. `step` reads no
clock, makes no random ids and does no I/O: every time comes from events (event time, never
arrival time) and every id is a hash of what caused it. The stream processor, the auditors'
replay and the tests therefore get the same alerts from the same input in the same order.

Assessment. A cluster (one child, see linking.py) is assessed in windows: for every event time t
of the cluster, the window ending at t holds the signs and significant incidents of the last
`sign_days` and the vulnerabilities of the last `vulnerability_days`. A window with no sign or
incident raises nothing (vulnerabilities never alert alone). Otherwise, in this order:
significant incident -> HIGH ("significant-incident"); a sexual-activity sign at an age below
the limit -> HIGH ("sexual-activity-under-13"); at least `distinct_signs` different signs ->
HIGH ("distinct-signs"); else the score (sum of weights, times the multi-agency factor when the
signs come from enough agencies) against the tier thresholds ("score"), raised to the rules'
pattern tier when the window holds `pattern_episodes` missing episodes within `pattern_days`
("repeated-missing", which also names a window the score alone puts at that tier). A missing
episode's weight is read from the episode (episodes.py: missing or absent, its length, a return
interview not done within 72 hours); rules of format 1 weigh every episode as the plain sign.
The cluster's assessment is its peak window: highest tier, then highest score, then latest end.
Adding an event never lowers any window's tier, so the peak tier only rises as evidence arrives
(an episode update may lower it: see below).

Each alert carries an explanation in plain words (reasons.py), from the peak it describes;
alerts of format 1 rules carry none, as they never did, so replay re-derives them unchanged.

Alerting. `step` emits an alert for the event's cluster when its peak tier rises above the
highest tier already alerted, or when the event itself is in the peak's evidence and comes from
an agency no earlier alert of the cluster named. An alert's id hashes its cause: cluster id,
tier, rule, evidence event ids and rules version.

Key rotation. An event's keys are its keys under every epoch it carries (see linking.py), so
the events a child's agencies send during a rotation, carrying both epochs, join its old-epoch
cluster and its new-epoch events into one cluster with one alert history. A child with no new
event in the transition is joined by its agencies re-sending recent records with both epochs:
an event already held that comes again with keys its cluster lacks adds them (see `_rekey`).

Lateness and bounded state. The block's watermark is the latest event time it has seen. An event
up to `lateness_days` behind it (the history limit, set in the rules file) counts where it
belongs in event time: it joins the windows it falls in, and may raise the alert those windows
reach, however it arrived (a backfill of an agency's history included). An event more than
that behind it is too late (`too_late`): `step` leaves the state as it is and raises nothing,
and the processor does not feed it to `step` at all: it dead-letters it with the reason and
journals it as dead-lettered, never as accepted (services/correlator/processing.py), so the
sending agency can be told and the auditors' replay, which follows the accepted entries, agrees.
Events that no acceptable future event can share a window with (older than watermark -
lateness - window) are pruned, so a block's state stops growing once events age out. A
duplicate (same agency and event id) changes nothing: it is either still held, or so old that
it is too late (and is dead-lettered like any event beyond the limit).

Updates of missing episodes. An agency updates an episode's record as it goes on (the child
found, the interview done); every version has the record's event id. Under format 2 rules a
version later than the one held (episodes.version_key: recorded later, then knowing more)
replaces it, so the episode counts once, as its latest version says (`_update`); an older
version or an exact resend only adds keys it brings, like any re-send. Which version is held
is thus independent of arrival order. An update can lower a window (the interview done): an
alert already raised stands, and nothing is raised for a lower tier. Updates do not move the
watermark (they carry the episode's start again). Under format 1 rules an update is a
duplicate, as it was.

Duplicates are per sending agency: an event is a duplicate of a held one when both its agency
and its event id are equal. Event ids are predictable from record references, so an agency that
sent an event with another agency's id first could otherwise have that agency's event dropped
as a duplicate. Two agencies' events with the same id both count (`id_collision` says when an
event is one of them, for the processor to report).

Bounded block. A block holds at most MAX_BLOCK_EVENTS observations, MAX_BLOCK_KEYS keys and
MAX_BLOCK_EPOCHS key epochs (what would remain once the event's time has moved the watermark
and old events aged out): beyond that `block_full` is true, `step` ignores the event and the
processor dead-letters it, as for a late one. Without it, a flood into one block (a hostile or
broken agency) would grow its state past what the snapshot format counts (uint16 counts, a
one-byte epoch index) and past Kafka's largest record, and the worker would fail to save it on
every restart. At the caps a state encodes to at most about 0.7 MB (snapshot.py: 49 bytes an
event, 65 a missing episode, 35 a key), under Kafka's 1 MiB default; a block of the producers'
4096 holds children born on one or two days, each with a few events in the window, far below
the caps.

Final alerts, precisely. After a stream of events, the final alerts of a block are
`standing_alerts(rules, state)`: for each cluster in the state whose peak reaches a tier, the
alert describing that peak over the events the state retains. Guarantee (tested with property
tests): for any arrival order of the same set of events, provided each event arrives at most
`lateness_days` behind the newest event its block has seen and no identity conflict arises,
(1) the final alerts are equal, alert ids included, and (2) for each final cluster the highest
tier among the alerts emitted about its events equals its final alert's tier, so no arrival
order hides or delays an escalation past the event that completes it. With episode updates
(2) weakens to "at least": an earlier version may have raised a tier its latest version no
longer reaches (tests/unit/test_episodes.py). Duplicating any event anywhere in a stream
changes neither the emitted alerts nor the final state.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from safehub.schemas.frozen import quick_init
from safehub.schemas.records import (
    CorrelatedAlert,
    Evidence,
    IngressEvent,
    MissingEpisodeEvent,
    ReidentificationRef,
)
from safehub.schemas.vocabulary import (
    Indicator,
    Sector,
    Sign,
    Tier,
)
from safehub.services.correlation import episodes
from safehub.services.correlation.authority import authorities
from safehub.services.correlation.episodes import Episode, episode_of, version_key
from safehub.services.correlation.linking import Key, Linking, event_keys, link, nhs_keys
from safehub.services.correlation.reasons import explain
from safehub.services.correlation.rules import (
    RULE_DISTINCT,
    RULE_INCIDENT,
    RULE_REPEATED_MISSING,
    RULE_SCORE,
    RULE_UNDER_13,
    IndicatorRule,
    Rules,
)

__all__ = ["RULE_DISTINCT", "RULE_INCIDENT", "RULE_REPEATED_MISSING", "RULE_SCORE",
           "RULE_UNDER_13"]


@quick_init
@dataclass(frozen=True, slots=True)
class Observation:
    """What the rules need of one accepted event."""

    event_id: str
    agency_id: str
    sector: Sector
    indicator: Indicator
    occurred_at: int
    age_years: int
    local_authority: str
    placing_authority: str | None
    reid_handle: str
    episode: Episode | None = None  # the version held, when the event is a missing episode


@quick_init
@dataclass(frozen=True, slots=True)
class Assessment:
    tier: Tier
    rule: str
    score: float
    anchor: int
    evidence: tuple[Observation, ...]


@quick_init
@dataclass(frozen=True, slots=True)
class Cluster:
    keys: frozenset[Key]
    observations: tuple[Observation, ...]  # sorted by (occurred_at, event_id, agency_id)
    conflict: bool = False
    alerted_rank: int = 0  # highest tier rank alerted so far (0 = none)
    alerted_agencies: frozenset[str] = frozenset()
    # The peak, cached so that a new event re-assesses only the windows it falls in. It is a
    # function of `observations` (see assess), hence left out of equality; `peak_known` is
    # False when it must be recomputed (after pruning, or when read back from a snapshot).
    peak: Assessment | None = field(default=None, compare=False)
    peak_known: bool = field(default=False, compare=False)


Size = tuple[int, int, frozenset[int]]


@quick_init
@dataclass(frozen=True, slots=True)
class BlockState:
    watermark: int = -1  # latest event time seen in the block; -1 before the first event
    clusters: tuple[Cluster, ...] = ()
    # Ids of the observations held: a quick test that rules out a duplicate or a collision
    # (the agency is then checked on the observations themselves, see `_held`).
    event_ids: frozenset[str] = frozenset()
    # (observations, keys, key epochs) held, cached so that `block_full` costs nothing per
    # event; a function of `clusters`, hence left out of equality; None when not known (read
    # from a snapshot).
    size: Size | None = field(default=None, compare=False)


def initial_state() -> BlockState:
    return BlockState()


def observation_of(event: IngressEvent) -> Observation:
    # A missing episode is the MISSING_FROM_HOME_OR_CARE sign at its start, weighed by what
    # the episode was (episodes.py); every episode is its own observation, so repeated
    # episodes add up.
    s = event.subject
    if isinstance(event, MissingEpisodeEvent):
        return Observation(
            event.event_id, event.agency_id, event.sector, Sign.MISSING_FROM_HOME_OR_CARE,
            event.occurred_at, s.age_years, s.local_authority, s.placing_authority,
            s.reid_handle, episode_of(event),
        )
    return Observation(
        event.event_id, event.agency_id, event.sector, event.indicator, event.occurred_at,
        s.age_years, s.local_authority, s.placing_authority, s.reid_handle,
    )


def observation_weight(rules: Rules, o: Observation) -> float:
    """The weight the rules give one observation (an episode's depends on the episode)."""
    if o.episode is None or rules.episodes is None:
        return rules.by_indicator[o.indicator].weight
    return episodes.weight(rules.episodes, o.occurred_at, o.episode)


def _held(state: BlockState, event: IngressEvent) -> bool:
    """Whether the state holds this agency's event with this id (a duplicate or a re-send)."""
    if event.event_id not in state.event_ids:
        return False  # the common case: no scan
    # Only for ids already seen (re-sends, collisions): scanning is rare.
    return any(o.event_id == event.event_id and o.agency_id == event.agency_id
               for c in state.clusters for o in c.observations)


def id_collision(state: BlockState, event: IngressEvent) -> bool:
    """Whether another agency's held event has this event's id (both count; see docstring)."""
    return event.event_id in state.event_ids and not _held(state, event)


MAX_BLOCK_EVENTS = 2000
MAX_EVENT_KEYS = 9  # four kinds under two epochs, and the agency's handle
MAX_BLOCK_KEYS = MAX_EVENT_KEYS * MAX_BLOCK_EVENTS  # every event a child of its own
# The snapshot numbers a block's key epochs with one byte; a rotation holds two at a time.
MAX_BLOCK_EPOCHS = 32


def _size_of(clusters: Iterable[Cluster]) -> Size:
    events = keys = 0
    epochs: set[int] = set()
    for c in clusters:
        events += len(c.observations)
        keys += len(c.keys)
        epochs.update(k[1] for k in c.keys)
    return events, keys, frozenset(epochs)


def _size(state: BlockState) -> Size:
    return state.size if state.size is not None else _size_of(state.clusters)


def _epochs_of(event: IngressEvent) -> frozenset[int]:
    other = event.subject.transition_keys
    return frozenset((event.subject.key_epoch,) if other is None
                     else (event.subject.key_epoch, other.key_epoch))


def block_full(rules: Rules, state: BlockState, event: IngressEvent) -> bool:
    """Whether `step` would ignore `event` as taking its block past the caps (see docstring)."""
    clusters = state.clusters
    events, keys, epochs = _size(state)
    new_epochs = _epochs_of(event)
    fits_epochs = new_epochs <= epochs or len(epochs | new_epochs) <= MAX_BLOCK_EPOCHS
    if events < MAX_BLOCK_EVENTS and keys + 2 * MAX_EVENT_KEYS <= MAX_BLOCK_KEYS and fits_epochs:
        return False  # the common case: far from the caps
    held = _held(state, event)
    keys_of_event = event_keys(event)
    if held:
        # A re-send adds only the keys its cluster lacks (a plain duplicate adds none).
        home = next(c for c in clusters if any(
            o.event_id == event.event_id and o.agency_id == event.agency_id
            for o in c.observations))
        added = len(keys_of_event - home.keys)
    else:
        added = len(keys_of_event)  # at most: some may be held already
    if (held or events < MAX_BLOCK_EVENTS) and keys + added <= MAX_BLOCK_KEYS and fits_epochs:
        return False  # the common case, without a scan of the observations
    # Full as it stands: count what survives the pruning this event's time would cause (a
    # re-sent event does not move the watermark), so that a full block takes new events again
    # once its old ones age out.
    watermark = state.watermark if held else max(state.watermark, event.occurred_at)
    sign_cut = watermark - rules.lateness_ms - rules.sign_window_ms
    vuln_cut = watermark - rules.lateness_ms - rules.vulnerability_window_ms
    table = rules.by_indicator
    events = keys = 0
    left_epochs: set[int] = set(new_epochs)
    for c in clusters:
        left = sum(1 for o in c.observations
                   if o.occurred_at >= (vuln_cut if table[o.indicator].vulnerability
                                        else sign_cut))
        if left:
            events += left
            keys += len(c.keys)
            left_epochs.update(k[1] for k in c.keys)
    return ((not held and events >= MAX_BLOCK_EVENTS) or keys + added > MAX_BLOCK_KEYS
            or len(left_epochs) > MAX_BLOCK_EPOCHS)


def too_late(rules: Rules, state: BlockState, event: IngressEvent) -> bool:
    """Whether `step` would ignore `event` as beyond the history limit (see the docstring).

    An event already held is never too late: it is a duplicate or a re-send with more keys.
    """
    return (state.watermark >= 0 and event.occurred_at < state.watermark - rules.lateness_ms
            and not _held(state, event))


def step(
    rules: Rules, state: BlockState, event: IngressEvent
) -> tuple[BlockState, tuple[CorrelatedAlert, ...]]:
    """Feed one event to its block's state; return the new state and the alerts it raises."""
    if block_full(rules, state, event):
        return state, ()
    if _held(state, event):
        if rules.episodes is not None and isinstance(event, MissingEpisodeEvent):
            return _update(rules, state, event)
        return _rekey(rules, state, event)
    if too_late(rules, state, event):
        return state, ()
    obs = observation_of(event)
    keys = event_keys(event)
    clusters = state.clusters
    linking = link([c.keys for c in clusters], keys)
    joined = [clusters[i] for i in linking.joined]
    if len(joined) == 1:
        # The common case: another event about a child already known.
        (only,) = joined
        merged_keys = only.keys if keys <= only.keys else only.keys | keys
        observations = _insert(only.observations, obs)
        conflict = linking.conflict or only.conflict
        alerted_rank, alerted_agencies = only.alerted_rank, only.alerted_agencies
        peak = (_reassess(rules, observations, only.peak, obs) if only.peak_known
                else _best(rules, observations, _anchors(observations), None))
        merged = Cluster(merged_keys, observations, conflict, alerted_rank, alerted_agencies,
                         peak, True)
    else:
        merged = _merged(rules, joined, keys, linking.conflict, obs)
    kept, alerts = _settle(rules, event.subject.linkage_block, clusters, linking, merged, obs)
    watermark = max(state.watermark, event.occurred_at)
    # Nothing can age out unless the watermark moves.
    dropped = watermark != state.watermark and _prune(rules, watermark, kept)
    if dropped:
        ids = frozenset(o.event_id for c in kept for o in c.observations)
        size = _size_of(kept)
    else:
        ids = state.event_ids | {obs.event_id}
        size = _resized(state, joined, merged, event, added=1)
    return BlockState(watermark, tuple(kept), ids, size), alerts


def _rekey(
    rules: Rules, state: BlockState, event: IngressEvent
) -> tuple[BlockState, tuple[CorrelatedAlert, ...]]:
    """An event already held, sent again: a duplicate, or re-sent with more keys.

    During a key rotation an agency re-sends its recent records with both epochs' keys, so that
    a child with no new event in the transition still has its old-epoch history joined to its
    new-epoch keys. The event counts once: only its keys are added to its cluster, which then
    links like any event (the NHS-number rule included). A plain duplicate changes nothing.
    """
    keys = event_keys(event)
    clusters = state.clusters
    home = next((i for i, c in enumerate(clusters)
                 if any(o.event_id == event.event_id and o.agency_id == event.agency_id
                        for o in c.observations)), None)
    if home is None or keys <= clusters[home].keys:
        return state, ()
    linking = link([c.keys for c in clusters], keys | clusters[home].keys)
    if home not in linking.joined:
        return state, ()  # unreachable: the cluster's own keys never conflict with it
    joined = [clusters[i] for i in linking.joined]
    merged = _merged(rules, joined, keys, linking.conflict)
    # No new observation: an alert only for a tier higher than any alerted.
    kept, alerts = _settle(rules, event.subject.linkage_block, clusters, linking, merged, None)
    size = _resized(state, joined, merged, event, added=0)
    return BlockState(state.watermark, tuple(kept), state.event_ids, size), alerts


def _update(
    rules: Rules, state: BlockState, event: MissingEpisodeEvent
) -> tuple[BlockState, tuple[CorrelatedAlert, ...]]:
    """A missing episode already held, sent again: a duplicate, an older version, or an update.

    The latest version (episodes.version_key) replaces the one held, so an episode counts once
    however often it is updated, as its latest record says; a duplicate or an older version
    only adds keys it brings (`_rekey`). An update may lower the episode's weight (the
    interview done): an alert already raised stands, and no alert is raised for a lower tier.
    The watermark is moved by new events only: an update carries the episode's start again.
    """
    new = observation_of(event)
    home = next(i for i, c in enumerate(state.clusters)
                if any(o.event_id == event.event_id and o.agency_id == event.agency_id
                       for o in c.observations))
    cluster = state.clusters[home]
    old = next(o for o in cluster.observations
               if o.event_id == event.event_id and o.agency_id == event.agency_id)
    if version_key(new.episode) <= version_key(old.episode):
        return _rekey(rules, state, event)
    keys = event_keys(event)
    clusters = list(state.clusters)
    observations = tuple(sorted((new if o is old else o for o in cluster.observations),
                                key=_order))
    clusters[home] = replace(cluster, observations=observations, peak=None, peak_known=False)
    linking = link([c.keys for c in clusters], keys | cluster.keys)
    joined = [clusters[i] for i in linking.joined]
    merged = _merged(rules, joined, keys, linking.conflict)
    kept, alerts = _settle(rules, event.subject.linkage_block, clusters, linking, merged, new)
    size = _resized(state, joined, merged, event, added=0)
    return BlockState(state.watermark, tuple(kept), state.event_ids, size), alerts


def _merged(rules: Rules, joined: Sequence[Cluster], keys: frozenset[Key], conflict: bool,
            new: Observation | None = None) -> Cluster:
    """The clusters an event's keys join (with `new`, its observation, when it is not held
    yet) as one cluster: their keys, observations and alert memory, its peak assessed afresh."""
    observations = tuple(sorted(
        (*(() if new is None else (new,)), *(o for c in joined for o in c.observations)),
        key=_order,
    ))
    return Cluster(keys.union(*(c.keys for c in joined)), observations,
                   conflict or any(c.conflict for c in joined),
                   max((c.alerted_rank for c in joined), default=0),
                   frozenset().union(*(c.alerted_agencies for c in joined)),
                   _best(rules, observations, _anchors(observations), None), True)


def _resized(state: BlockState, joined: Sequence[Cluster], merged: Cluster,
             event: IngressEvent, added: int) -> Size:
    """The block's size once `joined` became `merged` and `added` observations came in."""
    events, held_keys, epochs = _size(state)
    return (events + added, held_keys - sum(len(c.keys) for c in joined) + len(merged.keys),
            epochs | _epochs_of(event))


def _settle(rules: Rules, block: int, clusters: Sequence[Cluster], linking: Linking,
            merged: Cluster, newest: Observation | None,
            ) -> tuple[list[Cluster], tuple[CorrelatedAlert, ...]]:
    """The block's clusters with the joined ones replaced by `merged`, and the alert its peak
    raises: when the tier is higher than any alerted, or when `newest`, from an agency not yet
    alerted about this child, is part of the evidence (None: an event re-sent with more keys
    brings no new observation)."""
    alerts: tuple[CorrelatedAlert, ...] = ()
    peak = merged.peak
    if peak is not None and (
        peak.tier.rank > merged.alerted_rank
        # Identity, not equality: `newest` is a new object and its event id is not yet held.
        or (newest is not None and newest.agency_id not in merged.alerted_agencies
            and any(o is newest for o in peak.evidence))
    ):
        alert = alert_for(rules, block,
                          Cluster(merged.keys, merged.observations, merged.conflict), peak)
        alerts = (alert,)
        merged = replace(merged, alerted_rank=max(merged.alerted_rank, peak.tier.rank),
                         alerted_agencies=merged.alerted_agencies | frozenset(alert.agencies))
    kept = [
        replace(c, conflict=True) if i in linking.conflicting else c
        for i, c in enumerate(clusters) if i not in linking.joined
    ]
    # The clusters stay sorted by their smallest key: the others already are.
    bisect.insort(kept, merged, key=_cluster_order)
    return kept, alerts


def _order(o: Observation) -> tuple[int, str, str]:
    # The agency breaks ties between two agencies' events with the same id and time.
    return o.occurred_at, o.event_id, o.agency_id


def _cluster_order(c: Cluster) -> tuple[Key, tuple[int, str, str]]:
    # Two clusters share their smallest key only when it is an mk4, which never links (two
    # name-less records of twins): their first events order them, whatever the arrival order.
    return min(c.keys), _order(c.observations[0])


def _insert(observations: tuple[Observation, ...], obs: Observation) -> tuple[Observation, ...]:
    """`observations` with `obs` in its place (they are sorted by time, then event id)."""
    place = _order(obs)
    if _order(observations[-1]) < place:
        return (*observations, obs)  # events mostly arrive in time order
    at = bisect.bisect(observations, place, key=_order)
    return (*observations[:at], obs, *observations[at:])


def _anchors(observations: tuple[Observation, ...]) -> list[int]:
    return sorted({o.occurred_at for o in observations})


def _prune(rules: Rules, watermark: int, clusters: list[Cluster]) -> bool:
    """Drop, in place, what no acceptable future event can share a window with.

    True when anything was dropped. A cluster whose every event aged out is forgotten with its
    keys: nothing it held can count again, and a later event starts the child afresh.
    """
    sign_cut = watermark - rules.lateness_ms - rules.sign_window_ms
    vuln_cut = watermark - rules.lateness_ms - rules.vulnerability_window_ms
    safe = max(sign_cut, vuln_cut)  # anything at or after this is kept whatever it is
    table = rules.by_indicator
    dropped = False
    for i in range(len(clusters) - 1, -1, -1):
        c = clusters[i]
        if c.observations[0].occurred_at >= safe:
            continue  # its observations are in time order: none has expired
        obs = tuple(
            o for o in c.observations
            if o.occurred_at >= (vuln_cut if table[o.indicator].vulnerability else sign_cut)
        )
        if len(obs) == len(c.observations):
            continue
        dropped = True
        if obs:
            # The peak may have lost evidence: it is worked out again when next needed.
            clusters[i] = Cluster(c.keys, obs, c.conflict, c.alerted_rank, c.alerted_agencies)
        else:
            del clusters[i]
    return dropped


def _best(rules: Rules, obs: tuple[Observation, ...], anchors: Iterable[int],
          best: Assessment | None) -> Assessment | None:
    """The best of `best` and the windows ending at `anchors` (see `assess`).

    This is the core's inner loop (every candidate window of every event), hence one pass per
    window over observations sorted by time, and a window's evidence built only if it wins.
    """
    table = rules.by_indicator
    ep = rules.episodes
    # Per observation: its rule, its weight, whether it is a distinct sign, whether it is an
    # episode towards the pattern.
    rows: list[tuple[Observation, int, IndicatorRule, float, bool, bool]] = []
    for o in obs:
        r = table[o.indicator]
        if o.episode is None or ep is None:
            rows.append((o, o.occurred_at, r, r.weight, r.sign, False))
        else:
            sign = episodes.is_sign(ep, o.episode)
            rows.append((o, o.occurred_at, r, episodes.weight(ep, o.occurred_at, o.episode),
                         sign, sign))
    best_key = None if best is None else (best.tier.rank, best.score, best.anchor)
    under = rules.sexual_activity_under_age
    for anchor in anchors:
        raw = 0.0
        members: list[Observation] = []
        agencies: set[str] = set()
        distinct: set[Indicator] = set()
        incident = under_age = False
        repeated = 0  # episodes towards the pattern, within its window
        for o, at, r, w, sign, towards_pattern in rows:
            if at > anchor:
                break
            if at <= anchor - r.window_ms:
                continue
            members.append(o)
            raw += w
            if r.vulnerability:
                continue
            if towards_pattern and ep is not None and at > anchor - ep.pattern_ms:
                repeated += 1
            agencies.add(o.agency_id)
            if sign:
                distinct.add(o.indicator)
            if r.incident:
                incident = True
            elif r.sexual_activity and o.age_years < under:
                under_age = True
        if not agencies:
            continue  # vulnerabilities only, or nothing
        factor = rules.multi_agency_factor if len(agencies) >= rules.multi_agency_min else 1.0
        score = round(raw * factor, 3)
        tier: Tier | None
        if incident:
            tier, rule = Tier.HIGH, RULE_INCIDENT
        elif under_age:
            tier, rule = Tier.HIGH, RULE_UNDER_13
        elif len(distinct) >= rules.distinct_signs_high:
            tier, rule = Tier.HIGH, RULE_DISTINCT
        else:
            tier, rule = _by_score(rules, score)
            # The pattern names the alert unless the score alone reaches a higher tier: "3
            # missing episodes in 14 days" says more than "scoring 6".
            if (ep is not None and repeated >= ep.pattern_episodes
                    and (tier is None or tier.rank <= ep.pattern_tier.rank)):
                tier, rule = ep.pattern_tier, RULE_REPEATED_MISSING
            if tier is None:
                continue
        key = (tier.rank, score, anchor)
        if best_key is None or key > best_key:
            best, best_key = Assessment(tier, rule, score, anchor, tuple(members)), key
    return best


def _by_score(rules: Rules, score: float) -> tuple[Tier | None, str]:
    if score >= rules.high:
        return Tier.HIGH, RULE_SCORE
    if score >= rules.escalating:
        return Tier.ESCALATING, RULE_SCORE
    if score >= rules.emerging:
        return Tier.EMERGING, RULE_SCORE
    return None, RULE_SCORE


def assess(rules: Rules, cluster: Cluster) -> Assessment | None:
    """The cluster's peak window (highest tier, then score, then latest end), or None.

    Ties cannot remain: two windows with the same end are the same window.
    """
    return _best(rules, cluster.observations, _anchors(cluster.observations), None)


def _reassess(rules: Rules, observations: tuple[Observation, ...], old: Assessment | None,
              new: Observation) -> Assessment | None:
    """`assess` after adding `new` to a cluster whose previous peak was `old`.

    Only windows that contain `new` changed, and they only gained; every other window is as it
    was, so none of them beats `old` unless `old` itself was one that changed.
    """
    start, end = new.occurred_at, new.occurred_at + rules.by_indicator[new.indicator].window_ms
    keep = old if old is not None and not start <= old.anchor < end else None
    anchors = sorted({o.occurred_at for o in observations if start <= o.occurred_at < end})
    return _best(rules, observations, anchors, keep)


def cluster_id(block: int, cluster: Cluster) -> str:
    """Stable id of a child cluster: a hash of its best key (an NHS-number key if it has one).

    Clusters kept apart by an identity conflict can share their smallest key; a conflicted
    cluster without an NHS key is therefore named by its whole key set.

    The epoch is left out of the hash: ids made before keys had epochs stay as they were, and
    keys of two epochs never share a value. A key rotation by itself keeps the id: keys of one
    kind sort oldest epoch first, so the smallest stays the old epoch's while that history is
    held.
    """
    if cluster.conflict and not nhs_keys(cluster.keys):
        material = b"".join(bytes([k]) + v for k, _, v in sorted(cluster.keys))
    else:
        kind, _, value = min(cluster.keys)
        material = bytes([kind]) + value
    digest = hashlib.sha256(b"safehub-cluster\x00" + block.to_bytes(4, "big") + material)
    return digest.hexdigest()[:32]


def alert_for(rules: Rules, block: int, cluster: Cluster, peak: Assessment) -> CorrelatedAlert:
    cid = cluster_id(block, cluster)
    evidence = peak.evidence
    ids = [o.event_id for o in evidence]
    if len(set(ids)) < len(ids):
        # Two agencies' events share an id: name each by its agency too, so that alerts on
        # different evidence never share an id (and one is not dropped as the other's
        # duplicate). Without a collision the cause, hence every alert id, is as before.
        ids = [f"{o.agency_id}/{o.event_id}" for o in evidence]
    cause = "\x00".join(
        ["safehub-alert", cid, peak.tier.value, peak.rule, rules.version, *ids]
    )
    latest = evidence[-1]  # evidence is in time order, as the observations are
    authority = authorities(evidence)
    return CorrelatedAlert(
        alert_id=hashlib.sha256(cause.encode()).hexdigest()[:32],
        rules_version=rules.version,
        cluster_id=cid,
        linkage_block=block,
        tier=peak.tier,
        rule=peak.rule,
        score=peak.score,
        raised_at=peak.anchor,
        age_years=latest.age_years,
        local_authority=authority.local,
        placing_authority=authority.placing,
        agencies=tuple(sorted({o.agency_id for o in evidence})),
        evidence=tuple(
            Evidence(o.event_id, o.agency_id, o.sector, o.indicator, o.occurred_at,
                     observation_weight(rules, o))
            for o in evidence
        ),
        reidentification=tuple(
            ReidentificationRef(agency, handle)
            for agency, handle in sorted({(o.agency_id, o.reid_handle) for o in evidence})
        ),
        identity_conflict=cluster.conflict,
        authority_conflict=authority.conflict,
        # Format 1 rules raised alerts without one: replay re-derives them as they were.
        explanation=None if rules.episodes is None else explain(rules, peak),
    )


def standing_alerts(rules: Rules, block: int, state: BlockState) -> tuple[CorrelatedAlert, ...]:
    """The final alerts of a block (see the module docstring), sorted by cluster id."""
    out = []
    for c in state.clusters:
        peak = assess(rules, c)
        if peak is not None:
            out.append(alert_for(rules, block, c, peak))
    return tuple(sorted(out, key=lambda a: a.cluster_id))

