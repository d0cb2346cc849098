"""Key rotation keeps a child's history: producers send both epochs during a transition, and the
correlator links a child's old-epoch and new-epoch pseudonyms into one cluster."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehub.connection import write_secret
from safehub.errors import ConfigError
from safehub.producers.keying import (
    BLOCK_EPOCH,
    ByEpoch,
    CachingPRF,
    HmacPRF,
    Keying,
    OprfPRF,
    as_keying,
)
from safehub.producers.keysource import key_source
from safehub.producers.linkagekey import LinkageKey
from safehub.producers.matchkeys import match_keys
from safehub.producers.pseudonymisation import (
    Prepared,
    normalise_identity,
    prepare,
    prepare_many,
    to_event,
)
from safehub.producers.records import ChildIdentity, SignRecord
from safehub.schemas.records import (
    CorrelatedAlert,
    EpochKeys,
    IngressEvent,
    MatchKeys,
    Subject,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.correlation import snapshot
from safehub.services.correlation.core import BlockState, initial_state, standing_alerts, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from tests.golden.scenarios import all_scenarios, describe

RULES = load_rules(DEFAULT_RULES_PATH)
BLOCK = 311
DAY_MS = 86_400_000
T0 = 1_750_000_000_000
OLD, NEW = 1, 2
KEY_1 = LinkageKey(bytes(range(32)), epoch=OLD)
KEY_2 = LinkageKey(bytes(range(1, 33)), epoch=NEW)
HMAC_PRF = HmacPRF({OLD: KEY_1, NEW: KEY_2, BLOCK_EPOCH: KEY_1})


# -- the producer side ------------------------------------------------------------------------

def _record(ref: str, day: int = 0, first: str = "Amira", nhs: str | None = "9935181901",
            indicator: Sign = Sign.UNEXPLAINED_GIFTS_OR_MONEY) -> SignRecord:
    return SignRecord(ref, ChildIdentity(first, "Okonkwo", "2010-07-21", nhs, "LS6 2QT"),
                      "E08000035", T0 + day * DAY_MS, indicator)


def test_a_transition_event_carries_both_epochs_and_the_block_does_not_move() -> None:
    before = prepare(_record("r1"), "police-a", Keying(HMAC_PRF, OLD))
    during = prepare(_record("r1"), "police-a", Keying(HMAC_PRF, OLD, NEW))
    after = prepare(_record("r1"), "police-a", Keying(HMAC_PRF, NEW))
    assert before.match_keys == during.match_keys and before.key_epoch == during.key_epoch == OLD
    assert during.transition_keys == EpochKeys(NEW, after.match_keys)
    assert after.key_epoch == NEW and after.transition_keys is None
    assert before.transition_keys is None
    assert before.linkage_block == during.linkage_block == after.linkage_block
    old_values = {v for _, v in before.match_keys.present()}
    assert old_values.isdisjoint(v for _, v in after.match_keys.present())
    event = to_event(during, "police-a", Sector.POLICE, None, "ab" * 16)
    assert event.subject.key_epoch == OLD
    assert event.subject.transition_keys == EpochKeys(NEW, after.match_keys)


def test_hmac_path_is_version_1_byte_for_byte() -> None:
    """Events already on the topics keep linking while deployments migrate."""
    p = prepare(_record("r1"), "police-a", KEY_1)
    message = b"\x1f".join((b"safehub/mk1/nhs-number/v1", b"1", b"9935181901"))
    assert p.match_keys.mk1 == hmac.digest(KEY_1.secret, message, "sha256")
    block = hmac.digest(KEY_1.secret, b"\x1f".join((b"safehub/linkage-block/dob/v1", b"1",
                                                     b"2010-07-21")), "sha256")
    assert p.linkage_block == int.from_bytes(block[:8], "big") % 4096


class CountingPRF:
    def __init__(self, inner: OprfPRF) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int]] = []

    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        self.calls.append((epoch, len(inputs)))
        return self.inner.evaluate(epoch, inputs)


def test_a_batch_is_derived_in_few_prf_calls_of_distinct_inputs() -> None:
    prf = CountingPRF(OprfPRF.from_seeds({0: bytes(32), OLD: bytes([1]) * 32,
                                          NEW: bytes([2]) * 32}))
    keying = Keying(prf, OLD, NEW, batch=100)
    # 60 children with 5 records each, no NHS number: 120 distinct key inputs per epoch
    # (mk2, mk3), 60 birth dates.
    records = [
        SignRecord(f"r{c}-{n}", ChildIdentity(f"Child{chr(65 + c % 26)}{c}", "Okonkwo",
                                              f"2010-{1 + c % 12:02d}-{1 + c // 12:02d}",
                                              None, "LS6 2QT"),
                   "E08000035", T0 + n * DAY_MS, Sign.UNEXPLAINED_GIFTS_OR_MONEY)
        for c in range(60) for n in range(5)
    ]
    results = prepare_many([*records, replace(records[0], record_ref="")], "police-a", keying)
    assert sum(1 for r in results if not hasattr(r, "match_keys")) == 1  # the unusable one
    by_epoch: dict[int, list[int]] = {}
    for epoch, size in prf.calls:
        by_epoch.setdefault(epoch, []).append(size)
    assert by_epoch == {0: [60], OLD: [100, 20], NEW: [100, 20]}


def test_keying_settings_are_checked_and_repr_shows_no_secret() -> None:
    with pytest.raises(ConfigError):
        Keying(HMAC_PRF, 0)
    with pytest.raises(ConfigError):
        Keying(HMAC_PRF, OLD, OLD)
    with pytest.raises(ConfigError, match="no HMAC linkage key for epoch 9"):
        Keying(HMAC_PRF, 9).evaluate(9, [b"x\x1fy"])
    text = repr(Keying(HMAC_PRF, OLD, NEW)) + repr(HMAC_PRF) + repr(as_keying(KEY_1))
    assert KEY_1.secret.hex() not in text and "000102" not in text


def test_by_epoch_moves_an_hmac_deployment_to_the_oprf() -> None:
    oprf = OprfPRF.from_seeds({NEW: bytes([2]) * 32})
    keying = Keying(ByEpoch({OLD: HMAC_PRF, BLOCK_EPOCH: HMAC_PRF, NEW: oprf}), OLD, NEW)
    p = prepare(_record("r1"), "police-a", keying)
    assert p.match_keys == prepare(_record("r1"), "police-a", KEY_1).match_keys
    assert p.linkage_block == prepare(_record("r1"), "police-a", KEY_1).linkage_block
    identity = normalise_identity(_record("r1").identity)
    assert p.transition_keys == EpochKeys(NEW, match_keys(identity, Keying(oprf, NEW)))


# -- the correlator side ----------------------------------------------------------------------

def _keys(child: str, epoch: int, kinds: str = "mk1 mk2 mk3 mk4") -> MatchKeys:
    return MatchKeys(**{k: hashlib.sha256(f"{child}:{k}:{epoch}".encode()).digest()
                        for k in kinds.split()})


def _event(ref: str, day: float, child: str, epochs: tuple[int, ...],
           indicator: Sign = Sign.UNEXPLAINED_GIFTS_OR_MONEY, agency: str = "police-a",
           kinds: str = "mk1 mk2 mk3 mk4", nhs_of: str | None = None) -> WarningSignEvent:
    def keys(epoch: int) -> MatchKeys:
        base = _keys(child, epoch, kinds)
        if nhs_of is not None and base.mk1 is not None:
            base = replace(base, mk1=_keys(nhs_of, epoch, "mk1").mk1)
        return base

    transition = EpochKeys(epochs[1], keys(epochs[1])) if len(epochs) > 1 else None
    subject = Subject(keys(epochs[0]), epochs[0], BLOCK, 14, "E08000035", None,
                      hashlib.md5(f"h{ref}".encode()).hexdigest(), transition)
    sector = Sector.POLICE if agency.startswith("police") else Sector.HEALTH
    return WarningSignEvent(hashlib.md5(ref.encode()).hexdigest(), agency, sector,
                            T0 + int(day * DAY_MS), T0 + int(day * DAY_MS), subject, indicator)


def _run(stream: Sequence[IngressEvent]) -> tuple[BlockState, list[CorrelatedAlert]]:
    state: BlockState = initial_state()
    emitted: list[CorrelatedAlert] = []
    for event in stream:
        state, alerts = step(RULES, state, event)
        emitted.extend(alerts)
    return state, emitted


def _same_final_alerts(streams: tuple[list[IngressEvent], list[IngressEvent]]
                       ) -> tuple[BlockState, BlockState]:
    """Run the rotated stream and its single-epoch twin; both end with the same standing
    alerts, and the rotated state survives a snapshot. Returns both states."""
    rotated, single = streams
    state_r, _ = _run(rotated)
    state_s, _ = _run(single)
    assert standing_alerts(RULES, BLOCK, state_r) == standing_alerts(RULES, BLOCK, state_s)
    assert snapshot.decode(snapshot.encode(state_r)) == state_r
    return state_r, state_s


def _child_history() -> list[WarningSignEvent]:
    return [
        _event("p1", 0, "A", (OLD,), Sign.UNEXPLAINED_GIFTS_OR_MONEY),
        _event("h1", 2, "A", (OLD,), Sign.REPEAT_STI, agency="health-b"),
        _event("p2", 5, "A", (OLD, NEW), Sign.ASSOCIATING_WITH_OLDER_ADULTS),
        _event("h2", 7, "A", (OLD, NEW), Sign.MISSING_FROM_HOME_OR_CARE, agency="health-b",
               kinds="mk2 mk4"),
        _event("p3", 9, "A", (NEW,), Sign.OFFENDING, kinds="mk2 mk3"),
        _event("h3", 11, "A", (NEW,), Sign.DRUG_OR_ALCOHOL_MISUSE, agency="health-b",
               kinds="mk1 mk4"),
    ]


def test_before_during_and_after_a_rotation_make_one_cluster_with_one_alert_history() -> None:
    stream = _child_history()
    state, emitted = _run(stream)
    assert len(state.clusters) == 1
    (cluster,) = state.clusters
    assert {o.event_id for o in cluster.observations} == {e.event_id for e in stream}
    assert {k[1] for k in cluster.keys} == {OLD, NEW}
    assert emitted and len({a.cluster_id for a in emitted}) == 1
    tiers = [a.tier.rank for a in emitted]
    assert tiers == sorted(tiers)  # one history: it only escalates, never starts again
    (final,) = standing_alerts(RULES, BLOCK, state)
    assert final.cluster_id == emitted[0].cluster_id
    assert {e.event_id for e in final.evidence} == {e.event_id for e in stream}
    assert not final.identity_conflict
    # The alerts' cluster id is the one the child had before the rotation.
    before, _ = _run(stream[:2])
    (early,) = [c for c in before.clusters]
    assert early.keys <= cluster.keys and min(early.keys) == min(cluster.keys)


def test_without_transition_events_the_epochs_do_not_link() -> None:
    stream = [e for e in _child_history() if e.subject.transition_keys is None]
    state, _ = _run(stream)
    # Keys of two epochs never compare equal: no cluster spans the rotation.
    assert len(state.clusters) >= 2 and all(len({k[1] for k in c.keys}) == 1
                                            for c in state.clusters)


def test_any_arrival_order_of_a_rotation_gives_one_cluster() -> None:
    stream = _child_history()
    reference = standing_alerts(RULES, BLOCK, _run(stream)[0])
    for order in ([5, 4, 3, 2, 1, 0], [4, 0, 5, 2, 1, 3], [2, 5, 0, 3, 4, 1]):
        state, _ = _run([stream[i] for i in order])
        assert len(state.clusters) == 1
        assert standing_alerts(RULES, BLOCK, state) == reference


def test_siblings_stay_apart_through_a_rotation() -> None:
    """Twins: same surname, birth date and postcode (mk4), different first names and NHS."""
    stream = [
        _event("a1", 0, "A", (OLD,)),
        _event("b1", 1, "B", (OLD,)),
        _event("a2", 3, "A", (OLD, NEW)),
        _event("b2", 4, "B", (OLD, NEW)),
        _event("a3", 6, "A", (NEW,)),
        _event("b3", 7, "B", (NEW,)),
    ]
    twin_mk4 = {e: _keys("twins", e, "mk4").mk4 for e in (OLD, NEW)}

    def with_twin_mk4(event: WarningSignEvent) -> WarningSignEvent:
        s = event.subject
        other = s.transition_keys
        return replace(event, subject=replace(
            s, match_keys=replace(s.match_keys, mk4=twin_mk4[s.key_epoch]),
            transition_keys=None if other is None else replace(
                other, match_keys=replace(other.match_keys, mk4=twin_mk4[other.key_epoch]))))

    state, _ = _run([with_twin_mk4(e) for e in stream])
    # They share mk4 in both epochs, but their first names disagree: mk4 is no link (linking.py),
    # so nothing suggests one child and neither is flagged.
    assert len(state.clusters) == 2 and not any(c.conflict for c in state.clusters)
    by_child = [{e.event_id for e in stream[0::2]}, {e.event_id for e in stream[1::2]}]
    assert sorted(({o.event_id for o in c.observations} for c in state.clusters), key=len) \
        in (by_child, by_child[::-1])


def test_one_nhs_key_per_epoch_is_no_conflict_but_two_in_one_epoch_are() -> None:
    state, _ = _run([_event("a1", 0, "A", (OLD,)), _event("a2", 1, "A", (OLD, NEW)),
                     _event("a3", 2, "A", (NEW,))])
    (cluster,) = state.clusters
    assert not cluster.conflict and len([k for k in cluster.keys if k[0] == 1]) == 2
    # A record carrying child B's NHS number under the new epoch, with A's other keys.
    state, _ = step(RULES, state, _event("x1", 3, "A", (NEW,), nhs_of="B"))
    assert len(state.clusters) == 2 and all(c.conflict for c in state.clusters)
    good = [c for c in state.clusters if len(c.observations) == 3]
    assert len(good) == 1


def test_a_post_rotation_event_joins_a_bridged_cluster_despite_a_conflict_elsewhere() -> None:
    """The event has only new-epoch keys; the child's cluster also holds old-epoch NHS keys."""
    state, _ = _run([
        _event("a1", 0, "A", (OLD,)), _event("a2", 1, "A", (OLD, NEW)),
        # child C shares A's new-epoch name key (a data error) but has its own NHS number
        _event("c1", 2, "C", (NEW,), kinds="mk1"),
    ])
    c_mk1 = _keys("C", NEW, "mk1").mk1
    a_mk2 = _keys("A", NEW, "mk2").mk2
    assert c_mk1 is not None and a_mk2 is not None
    c2 = _event("c2", 3, "C", (NEW,), kinds="mk1")
    c2 = replace(c2, subject=replace(c2.subject, match_keys=MatchKeys(mk1=c_mk1, mk2=a_mk2)))
    state, _ = step(RULES, state, c2)
    a3 = _event("a3", 4, "A", (NEW,), kinds="mk1 mk2")
    state, _ = step(RULES, state, a3)
    clusters = {frozenset(o.event_id for o in c.observations): c for c in state.clusters}
    a_ids = frozenset(_event(r, 0, "A", (OLD,)).event_id for r in ("a1", "a2", "a3"))
    assert a_ids in clusters  # a3 found A's cluster through its new-epoch NHS key
    assert clusters[a_ids].conflict


# -- single-epoch behaviour is unchanged ------------------------------------------------------

def _with_transition(event: IngressEvent) -> IngressEvent:
    s = event.subject
    moved = MatchKeys(**{k: hashlib.sha256(b"epoch 2 " + v).digest()
                         for k, v in s.match_keys.present()})
    return replace(event, subject=replace(s, transition_keys=EpochKeys(NEW, moved)))


@pytest.mark.parametrize("scenario", all_scenarios(), ids=lambda s: s.name)
def test_golden_scenarios_give_the_same_alerts_when_every_event_carries_two_epochs(
    scenario: object,
) -> None:
    from tests.golden.scenarios import Scenario

    assert isinstance(scenario, Scenario)
    _, single = _run([r.event for r in scenario.rows])
    state = initial_state()
    emitted: list[tuple[int, CorrelatedAlert]] = []
    for row in scenario.rows:
        state, alerts = step(RULES, state, _with_transition(row.event))
        emitted.extend((row.number, a) for a in alerts)
    assert describe(scenario, emitted) == list(scenario.expected)
    assert [a for _, a in emitted] == single  # ids too: the epoch is not in a cluster id


# -- property: a rotation with a bridge per child changes no final alert -----------------------

@st.composite
def rotation_streams(draw: st.DrawFn) -> tuple[list[IngressEvent], list[IngressEvent]]:
    """Events about 1-3 children in phases before/during/after, each child with one full
    transition event; returns (the rotation stream, the same events under epoch 1 only)."""
    children = draw(st.integers(1, 3))
    rotated: list[IngressEvent] = []
    single: list[IngressEvent] = []
    for c in range(children):
        specs = _specs(draw, [(OLD,), (OLD, NEW), (NEW,)], draw(st.integers(0, 5)))
        specs.append(((OLD, NEW), "mk1 mk2 mk3 mk4", Sign.UNEXPLAINED_GIFTS_OR_MONEY, 14,
                      "police-a"))
        for i, (epochs, kinds, sign, day, agency) in enumerate(specs):
            ref = f"c{c}-{i}"
            rotated.append(_event(ref, day, f"K{c}", epochs, sign, agency, kinds))
            single.append(_event(ref, day, f"K{c}", (OLD,), sign, agency, kinds))
    return _in_one_order(draw, rotated, single)


Spec = tuple[tuple[int, ...], str, Sign, int, str]  # epochs, match-key kinds, sign, day, agency


def _specs(draw: st.DrawFn, epochs: list[tuple[int, ...]], n: int) -> list[Spec]:
    """n events about one child, drawn: under which epochs, which keys, which sign, when, from
    whom."""
    return [(draw(st.sampled_from(epochs)),
             " ".join(sorted(draw(st.sets(st.sampled_from(["mk1", "mk2", "mk3", "mk4"]),
                                          min_size=1)))),
             draw(st.sampled_from(list(Sign))), draw(st.integers(0, 29)),
             draw(st.sampled_from(["police-a", "health-b"])))
            for _ in range(n)]


def _in_one_order(draw: st.DrawFn, rotated: list[IngressEvent], single: list[IngressEvent]
                  ) -> tuple[list[IngressEvent], list[IngressEvent]]:
    """Both streams shuffled into the same drawn order."""
    order = draw(st.permutations(range(len(rotated))))
    return [rotated[i] for i in order], [single[i] for i in order]


@settings(max_examples=120, deadline=None)
@given(rotation_streams())
def test_a_bridged_rotation_gives_the_final_alerts_of_a_single_epoch(
    streams: tuple[list[IngressEvent], list[IngressEvent]],
) -> None:
    state_r, state_s = _same_final_alerts(streams)
    assert sorted(sorted(o.event_id for o in c.observations) for c in state_r.clusters) == \
        sorted(sorted(o.event_id for o in c.observations) for c in state_s.clusters)


# -- the snapshot ------------------------------------------------------------------------------

# Format 2, written by the version before key epochs: one cluster with an mk1 and an mk2 key.
FORMAT_2 = bytes.fromhex(
    "020068e5cf8b01000004000800706f6c6963652d610600504f4c494345090053454c465f4841524d0900453038"
    "30303030333501000201100101010101010101010101010101010102100202020202020202020202020202020200"
    "02010000000100abababababababababababababababab0000010002000068e5cf8b0100000e000300ffffcdcdcd"
    "cdcdcdcdcdcdcdcdcdcdcdcdcd"
)


def test_a_format_2_snapshot_is_read_with_its_keys_in_the_legacy_epoch() -> None:
    state = snapshot.decode(FORMAT_2)
    (cluster,) = state.clusters
    assert cluster.keys == {(1, 1, b"\x01" * 16), (2, 1, b"\x02" * 16)}
    assert cluster.alerted_rank == 2 and cluster.alerted_agencies == {"police-a"}
    assert state.event_ids == {"ab" * 16}
    (later,) = snapshot.decode(FORMAT_2, legacy_epoch=3).clusters
    assert {k[1] for k in later.keys} == {3}
    again = snapshot.decode(snapshot.encode(state))
    assert again == state and snapshot.encode(state)[:1] == b"\x04"


def test_a_two_epoch_state_round_trips() -> None:
    state, _ = _run(_child_history())
    data = snapshot.encode(state)
    assert snapshot.decode(data) == state


# -- where the keys come from (safehub publish's settings) ------------------------------------

def test_version_1_settings_give_version_1_keys(tmp_path: Path) -> None:
    env = {"SAFEHUB_LINKAGE_KEY": KEY_1.secret.hex()}
    source = key_source(env)
    keying, close = source.open()
    close()
    assert (keying.epoch, keying.transition_epoch) == (OLD, None)
    assert prepare(_record("r1"), "police-a", keying) == prepare(_record("r1"), "police-a", KEY_1)
    assert KEY_1.secret.hex() not in repr(source)
    # an HMAC-only rotation: the transition key from its own file, the block stays put
    other = tmp_path / "epoch2.hex"
    other.write_text(KEY_2.secret.hex())
    during, _ = key_source({**env, "SAFEHUB_KEY_TRANSITION_EPOCH": "2",
                            "SAFEHUB_LINKAGE_TRANSITION_KEY_FILE": str(other)}).open()
    after, _ = key_source({**env, "SAFEHUB_LINKAGE_KEY_EPOCH": "1"}, epoch=NEW,
                          transition_key_file=str(other)).open()
    p_during, p_after = (prepare(_record("r1"), "police-a", k) for k in (during, after))
    assert p_during.transition_keys == EpochKeys(NEW, p_after.match_keys)
    assert p_during.linkage_block == p_after.linkage_block
    with pytest.raises(ConfigError, match=r"no HMAC linkage key for epoch\(s\) \[2\]"):
        key_source(env, transition_epoch=NEW)


def test_key_service_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bearer secret"):
        key_source({"SAFEHUB_KEYSERVICE_URL": "https://127.0.0.1:1"})
    secret, ca = tmp_path / "police-a.secret", tmp_path / "ca.pem"
    write_secret(secret, "s3cret")
    ca.write_text("not read until a call is made\n")
    env = {"SAFEHUB_KEYSERVICE_URL": "https://127.0.0.1:1",
           "SAFEHUB_KEYSERVICE_SECRET_FILE": str(secret), "SAFEHUB_KEYSERVICE_CA_FILE": str(ca),
           "SAFEHUB_KEY_EPOCH": "2", "SAFEHUB_KEY_TRANSITION_EPOCH": "3",
           # left over from version 1: not used unless SAFEHUB_HMAC_EPOCHS says so
           "SAFEHUB_LINKAGE_KEY": KEY_1.secret.hex()}
    source = key_source(env)
    assert source.hmac == {} and source.keyservice is not None
    assert (source.epoch, source.transition_epoch) == (2, 3)
    # Migrating: the block and epoch 1 stay on the HMAC key, epoch 2 is the key service's.
    migrating = key_source({**env, "SAFEHUB_KEY_EPOCH": "1",
                            "SAFEHUB_KEY_TRANSITION_EPOCH": "2", "SAFEHUB_HMAC_EPOCHS": "0,1"})
    assert sorted(migrating.hmac) == [0, 1]
    with pytest.raises(ConfigError, match=r"no HMAC key for epoch\(s\) \[2\]"):
        key_source({**env, "SAFEHUB_HMAC_EPOCHS": "0,2"})
    assert "s3cret" not in repr(source) + repr(migrating)


# -- re-sending recent records bridges children with no new event in the transition ------------

def _resent(event: WarningSignEvent, child: str = "A") -> WarningSignEvent:
    """The same record sent again during the transition, with its keys under both epochs."""
    s = event.subject
    kinds = " ".join(k for k, _ in s.match_keys.present())
    return replace(event, subject=replace(
        s, transition_keys=EpochKeys(NEW, _keys(child, NEW, kinds))))


def test_a_resent_record_joins_a_childs_history_to_its_new_epoch_events() -> None:
    before = [_event("p1", 0, "A", (OLD,), Sign.ASSOCIATING_WITH_OLDER_ADULTS),
              _event("h1", 1, "A", (OLD,), Sign.POOR_MENTAL_HEALTH, agency="health-b")]
    after = [_event("p2", 10, "A", (NEW,), Sign.UNEXPLAINED_GIFTS_OR_MONEY, kinds="mk2"),
             _event("h2", 11, "A", (NEW,), Sign.REPEAT_STI, agency="health-b", kinds="mk2")]
    apart, _ = _run([*before, *after])
    assert len(apart.clusters) == 2  # no event in the transition: two histories
    state, emitted = _run([*before, _resent(before[0]), *after])
    assert len(state.clusters) == 1 and len(state.event_ids) == 4  # the re-send counts once
    assert len({a.cluster_id for a in emitted}) == 1
    assert [a.tier for a in emitted][-1].rank > emitted[0].tier.rank
    # Re-sent after the new-epoch events arrived, the two clusters are merged, and the merged
    # picture (three distinct signs) raises an alert under the old cluster's id.
    state, emitted = _run([*before, *after, _resent(before[0])])
    assert len(state.clusters) == 1
    first_id = emitted[0].cluster_id
    assert emitted[-1].cluster_id == first_id and emitted[-1].rule == "distinct-signs"
    assert {e.event_id for e in emitted[-1].evidence} == {e.event_id for e in [*before, *after]}
    # Sent again identically, it changes nothing.
    again, alerts = step(RULES, state, _resent(before[0]))
    assert again == state and alerts == ()


def test_a_resent_record_does_not_merge_across_an_nhs_conflict() -> None:
    before = [_event("a1", 0, "A", (OLD,))]
    # After the rotation, child C has A's new-epoch name keys but its own NHS number.
    c1 = _event("c1", 5, "C", (NEW,), kinds="mk1")
    c_keys = MatchKeys(mk1=c1.subject.match_keys.mk1, mk2=_keys("A", NEW, "mk2").mk2)
    c1 = replace(c1, subject=replace(c1.subject, match_keys=c_keys))
    state, _ = _run([*before, c1, _resent(before[0])])
    assert len(state.clusters) == 2 and all(c.conflict for c in state.clusters)
    assert snapshot.decode(snapshot.encode(state)) == state


def test_a_caching_prf_sends_each_input_once_per_run() -> None:
    counting = CountingPRF(OprfPRF.from_seeds({0: bytes(32), OLD: bytes([1]) * 32}))
    cached = CachingPRF(counting, max_entries=6)
    keying = Keying(cached, OLD)
    first = prepare_many([_record("r1"), _record("r2", day=1)], "police-a", keying)
    assert counting.calls == [(0, 1), (OLD, 3)]  # one birth date, one child's three keys
    again = prepare_many([_record("r3", day=2)], "police-a", keying)
    assert counting.calls == [(0, 1), (OLD, 3)]  # nothing new to evaluate
    assert isinstance(first[0], Prepared) and isinstance(again[0], Prepared)
    assert again[0].match_keys == first[0].match_keys
    assert again[0].linkage_block == first[0].linkage_block
    other = prepare_many([_record("r4", first="Zainab", nhs=None)], "police-a", keying)
    # A sister: her own name keys; surname + birth date + postcode (mk4) is already known.
    assert counting.calls[2:] == [(OLD, 2)]
    assert isinstance(other[0], Prepared) and "6 held" in repr(cached)  # bounded: 5 + 2 > 6
    assert other[0].match_keys == prepare(_record("r4", first="Zainab", nhs=None), "police-a",
                                          Keying(counting.inner, OLD)).match_keys


@st.composite
def resent_streams(draw: st.DrawFn) -> tuple[list[IngressEvent], list[IngressEvent]]:
    """As rotation_streams, but each child is bridged by an old record sent again with both
    epochs (same event id), which may arrive before or after the original."""
    children = draw(st.integers(1, 3))
    rotated: list[IngressEvent] = []
    single: list[IngressEvent] = []
    for c in range(children):
        specs = _specs(draw, [(OLD,), (NEW,)], draw(st.integers(0, 5)))
        for i, (epochs, kinds, sign, day, agency) in enumerate(specs):
            rotated.append(_event(f"c{c}-{i}", day, f"K{c}", epochs, sign, agency, kinds))
            single.append(_event(f"c{c}-{i}", day, f"K{c}", (OLD,), sign, agency, kinds))
        record = _event(f"c{c}-r", 3, f"K{c}", (OLD,), Sign.UNEXPLAINED_GIFTS_OR_MONEY)
        rotated += [record, _resent(record, f"K{c}")]
        single += [record, record]
    return _in_one_order(draw, rotated, single)


@settings(max_examples=120, deadline=None)
@given(resent_streams())
def test_a_rotation_bridged_by_resent_records_gives_the_single_epoch_final_alerts(
    streams: tuple[list[IngressEvent], list[IngressEvent]],
) -> None:
    state_r, state_s = _same_final_alerts(streams)
    assert state_r.event_ids == state_s.event_ids
