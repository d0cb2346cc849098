"""Match keys and linkage blocks: one child links across agencies, two children do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehub.errors import ConfigError
from safehub.producers.exports import LineError, example_mapping, load_mapping, read_export
from safehub.producers.keying import HmacPRF, Keying, OprfPRF
from safehub.producers.linkagekey import LinkageKey, load_linkage_key
from safehub.producers.matchkeys import BLOCK_COUNT, linkage_block, match_keys, message_key
from safehub.producers.pseudonymisation import (
    Prepared,
    normalise_identity,
    prepare,
    prepare_many,
    to_event,
)
from safehub.producers.records import AgencyRecord, ChildIdentity, SignRecord
from safehub.producers.simulation.export import publisher_record
from safehub.producers.simulation.trajectories import simulate
from safehub.schemas.records import MatchKeys
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.correlation.core import BlockState, initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, parse_rules

KEY = LinkageKey(bytes(range(32)), epoch=3)
EXAMPLES = Path(__file__).resolve().parents[2] / "producers" / "examples"


def _keys(identity: ChildIdentity, key: LinkageKey = KEY) -> tuple[MatchKeys, int]:
    norm = normalise_identity(identity)
    return match_keys(norm, key), linkage_block(norm, key)


def _shared(a: MatchKeys, b: MatchKeys) -> set[str]:
    da, db = dict(a.present()), dict(b.present())
    return {n for n in da if n in db and da[n] == db[n]}


def test_school_and_police_link_the_same_child() -> None:
    school = ChildIdentity("Chloë", "O'Brien-Walsh", "2009-03-14", "996 030 8243", "LS9 8AB")
    # Police: no NHS number, no diaeresis, another date and postcode format.
    police = ChildIdentity("CHLOE", "OBRIEN WALSH", "14/03/2009", None, "ls98ab",
                           date_format="DD/MM/YYYY")
    school_keys, school_block = _keys(school)
    police_keys, police_block = _keys(police)
    assert school_block == police_block
    assert police_keys.mk1 is None and school_keys.mk1 is not None
    assert _shared(school_keys, police_keys) == {"mk2", "mk3"}


def test_no_surname_postcode_key_is_derived() -> None:
    """mk4 (surname + birth date + postcode) never links (twins share it), so it is not made:
    a first-name transposition with no NHS number shares no key, where mk4 was the only one."""
    school = ChildIdentity("Chloë", "O'Brien-Walsh", "2009-03-14", "996 030 8243", "LS9 8AB")
    police = ChildIdentity("Chole", "OBRIEN WALSH", "14/03/2009", None, "ls98ab",
                           date_format="DD/MM/YYYY")
    school_keys, _ = _keys(school)
    police_keys, _ = _keys(police)
    assert school_keys.mk4 is None and police_keys.mk4 is None
    assert _shared(school_keys, police_keys) == set()


def test_phonetic_key_absorbs_spelling_variants() -> None:
    a, _ = _keys(ChildIdentity("Jessica", "Smith", "2010-01-05"))
    b, _ = _keys(ChildIdentity("Jessika", "Smith", "2010-01-05"))
    assert a.mk3 == b.mk3 is not None
    assert a.mk2 is None and b.mk2 is None  # no postcode, no mk2


def test_first_name_and_address_key_links_across_a_surname_change() -> None:
    """mk2 (phonetic first name + birth date + postcode) links a step-parent's surname or a
    surname typo; twins, who share surname, birth date and address, have other first names."""
    school = ChildIdentity("Jessica", "Smith", "2010-01-05", None, "LS6 2QT")
    police = ChildIdentity("Jessika", "Smith-Okafor", "2010-01-05", None, "ls6 2qt")
    twin = ChildIdentity("Jodie", "Smith", "2010-01-05", None, "LS6 2QT")
    moved = ChildIdentity("Jessica", "Smith-Okafor", "2010-01-05", None, "BD7 1XY")
    s, p, t, m = (_keys(i)[0] for i in (school, police, twin, moved))
    assert _shared(s, p) == {"mk2"}
    assert _shared(s, t) == set() and _shared(p, m) == {"mk3"}


def test_two_children_with_the_same_birthday_share_no_key() -> None:
    a, block_a = _keys(ChildIdentity("Amira", "Okonkwo", "2010-07-21", "9935181901", "LS6 2QT"))
    b, block_b = _keys(ChildIdentity("Tyler", "Haddock", "2010-07-21", "6281948211", "LS6 2QT"))
    assert block_a == block_b  # same DOB, same block: they are correlated side by side
    assert _shared(a, b) == set()


def test_keys_depend_on_the_key_and_its_epoch() -> None:
    ident = ChildIdentity("Amira", "Okonkwo", "2010-07-21", "9935181901", "LS6 2QT")
    base, _ = _keys(ident)
    other_epoch, _ = _keys(ident, LinkageKey(KEY.secret, epoch=4))
    other_key, _ = _keys(ident, LinkageKey(bytes(32), epoch=3))
    assert _shared(base, other_epoch) == set() and _shared(base, other_key) == set()
    # domain tags: no two of one child's keys are equal
    values = [v for _, v in base.present()]
    assert len(set(values)) == len(values) == 3 and all(len(v) == 32 for v in values)


def test_blocks_spread_and_message_key_is_4_byte_big_endian() -> None:
    blocks = {
        _keys(ChildIdentity("A", "B", f"20{y:02d}-{m:02d}-{d:02d}"))[1]
        for y in range(5, 10) for m in range(1, 13) for d in range(1, 29)
    }
    assert all(0 <= b < BLOCK_COUNT for b in blocks)
    assert len(blocks) > 1000  # 1680 birth dates over 4096 buckets
    assert message_key(0x0ABC) == b"\x00\x00\x0a\xbc"


def test_example_exports_link_across_sectors() -> None:
    """The bundled school and police examples describe the same child (see examples/README)."""
    def first(sector: Sector, name: str) -> Prepared:
        rows = list(read_export(EXAMPLES / name, load_mapping(example_mapping(sector))))
        record = rows[0][1]
        assert not isinstance(record, LineError)
        return prepare(record, "agency-" + sector.value.lower(), KEY)

    school, police = first(Sector.EDUCATION, "education.csv"), first(Sector.POLICE, "police.csv")
    assert school.linkage_block == police.linkage_block
    assert "mk3" in _shared(school.match_keys, police.match_keys)


def test_event_id_from_agency_and_record_reference() -> None:
    rec = SignRecord("R-1", ChildIdentity("Amira", "Okonkwo", "2010-07-21"), "E08000035",
                     1_710_000_000_000, Sign.SELF_HARM)
    a, b = prepare(rec, "health-leeds", KEY), prepare(rec, "health-leeds", KEY)
    other = prepare(rec, "police-wy", KEY)
    assert a.event_id == b.event_id != other.event_id and len(a.event_id) == 32


def test_linkage_key_loading(tmp_path: Path) -> None:
    secret = "ab" * 32
    assert load_linkage_key(env={"SAFEHUB_LINKAGE_KEY": secret}).secret == bytes.fromhex(secret)
    f = tmp_path / "key.hex"
    f.write_text(secret + "\n")
    key = load_linkage_key(f, env={"SAFEHUB_LINKAGE_KEY_EPOCH": "7"})
    assert key.epoch == 7 and secret not in repr(key) and "abab" not in str(key)
    with pytest.raises(ConfigError, match="no linkage key"):
        load_linkage_key(env={})
    with pytest.raises(ConfigError, match="at least 32") as err:
        load_linkage_key(env={"SAFEHUB_LINKAGE_KEY": "cd" * 16})
    assert "cdcd" not in str(err.value)
    with pytest.raises(ConfigError, match="not hexadecimal") as err:
        load_linkage_key(env={"SAFEHUB_LINKAGE_KEY": "secret-passphrase" * 4})
    assert "passphrase" not in str(err.value)


# -- the OPRF gives the clusters HMAC gave ----------------------------------------------------

def _clusters(
    records: list[tuple[str, Sector, AgencyRecord]], keying: Keying
) -> set[frozenset[str]]:
    """Each record published as its agency would, then correlated: the clusters, as the sets of
    record references they hold (blocks differ between the PRFs; the grouping must not).

    Lateness is per block (its watermark is its newest event), so which late events count
    depends on the block's other children; a lateness longer than the data keeps every event."""
    text = DEFAULT_RULES_PATH.read_text().replace("lateness_days = 30", "lateness_days = 3650")
    rules = parse_rules(text.encode(), "no-lateness")
    states: dict[int, BlockState] = {}
    ref_of: dict[str, str] = {}
    by_agency: dict[tuple[str, Sector], list[AgencyRecord]] = {}
    for agency, sector, record in records:
        by_agency.setdefault((agency, sector), []).append(record)
    for (agency, sector), recs in by_agency.items():
        for record, prepared in zip(recs, prepare_many(recs, agency, keying), strict=True):
            assert isinstance(prepared, Prepared)
            event = to_event(prepared, agency, sector, None, prepared.event_id)
            ref_of[event.event_id] = f"{agency}/{record.record_ref}"
            block = event.subject.linkage_block
            states[block], _ = step(rules, states.get(block, initial_state()), event)
    return {frozenset(ref_of[o.event_id] for o in c.observations)
            for s in states.values() for c in s.clusters}


HMAC_KEYING = Keying(HmacPRF.version1(LinkageKey(bytes(range(32)), epoch=1)), 1)
OPRF_KEYING = Keying(OprfPRF.from_seeds({0: bytes([7]) * 32, 1: bytes([8]) * 32}), 1)


def test_example_exports_of_every_sector_give_the_same_clusters_with_the_oprf() -> None:
    records = []
    for sector in Sector:
        (path,) = [p for p in EXAMPLES.glob(f"{sector.value.lower()}.*") if p.suffix != ".toml"]
        for _, parsed in read_export(path, load_mapping(example_mapping(sector))):
            assert not isinstance(parsed, LineError)
            records.append(("agency-" + sector.value.lower(), sector, parsed))
    assert {s for _, s, _ in records} == set(Sector)
    hmac_clusters = _clusters(records, HMAC_KEYING)
    assert hmac_clusters == _clusters(records, OPRF_KEYING)
    # and they link across agencies, as the examples' README says they do
    assert any(len({ref.split("/")[0] for ref in c}) >= 3 for c in hmac_clusters)


def test_a_simulated_population_gives_the_same_clusters_with_the_oprf() -> None:
    population = simulate(5, children=2000, months=12)
    records = [(r.agency_id, r.sector, publisher_record(r)) for r in population.records]
    assert len(records) > 1000
    clusters = _clusters(records, HMAC_KEYING)
    assert clusters == _clusters(records, OPRF_KEYING)
    assert sum(1 for c in clusters if len({ref.split("/")[0] for ref in c}) > 1) > 50
