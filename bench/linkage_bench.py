"""Linkage benchmark: pairwise precision and recall of the correlator's linking (issue 20) on a
simulated world of children whose records carry realistic noise.

Pure and broker-free. Each record's identifiers go through the producers' real match keys and
linkage block (safehub.producers.matchkeys.derive, the key service's OPRF computed in-process
under fixed bench keys; NYSIIS as the agencies compute it), then every record, as one event,
through the correlator's pure core (`step`) per linkage block, as the stream processor would
feed them. The core's clusters are the predicted identities. All events fall within a few
days, so nothing is too late or pruned: the figures measure linking alone.

The world (rates per record unless said; each choice is drawn from a seeded RNG):
- children 10-17 years old; half of the first names and a fifth of the surnames drawn with a
  skewed (Zipf-like) frequency from lists of the commonest names in England and Wales, the rest
  from a long tail of rarer names, so unrelated children do share names and, now and then, a
  name and a birth date (a "data-entry clash" no key can tell apart without an NHS number);
- families: 35 % of children have a sibling in the population (same surname and postcode,
  another birth date); 3 % of children are twins (1.5 % of births: same surname, birth date and
  postcode, a different first name);
- 1-6 records per child from agencies of six sectors (one agency per sector, whose vault gives
  the child one handle for its own person reference, as in the simulator), each record's
  identifiers entered with the noise of producers/simulation/noise.py (the one model, also
  applied to the simulator's noisy world that bench/detection_bench.py scores): the NHS number
  held at a sector's rate (health 95 %, ... voluntary 15 %) and dropped after a typo (1 %);
  first-name nicknames 3 %,
  spelling variants 3 %, typos 1.5 %; surname typos 1 %, another surname 1 %; date-of-birth
  digit typos 0.7 %, day/month swaps 0.5 %; moved postcodes 10 %, none recorded 5 %.

Pairwise figures: a predicted pair is two records in one cluster; a true pair is two records of
one child. Precision = true predicted pairs / predicted pairs; recall = true predicted pairs /
true pairs. Missed pairs are split by cause: records in different linkage blocks (a date-of-
birth error: see linking.py, not linked by design), or in one block without strong evidence
(no shared NHS number or name key).

    python -m bench.linkage_bench [--children N] [--seed S]

writes bench/results/linkage.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from safehub.producers.keying import BLOCK_EPOCH, CachingPRF, Keying, OprfPRF
from safehub.producers.matchkeys import DerivedKeys, derive
from safehub.producers.normalisation import NormalisedIdentity
from safehub.producers.simulation.noise import (
    IDENTITY_NOISE,
    LETTERS,
    NHS_HELD,
    SIBLING_SHARE,
    TWIN_SHARE,
    entered,
)
from safehub.schemas.records import Subject, WarningSignEvent
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.correlation.core import BlockState, initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, Rules, load_rules

RESULTS = Path(__file__).resolve().parent / "results"
# The key service's PRF (RFC 9497 OPRF) computed in-process from fixed keys: the values the
# service would give, without a service or a broker for a pure benchmark.
BENCH_KEY = Keying(CachingPRF(OprfPRF.from_seeds({
    epoch: hashlib.sha256(b"safehub linkage bench key %d" % epoch).digest()
    for epoch in (BLOCK_EPOCH, 1)})), epoch=1)
T0 = 1_736_121_600_000
TODAY = date(2025, 1, 6)

FIRST = (  # noqa: SIM905 (a list literal of 100 names would be 100 lines)
    "OLIVIA AMELIA ISLA AVA MIA IVY LILY ISABELLA ROSIE SOPHIA GRACE FREYA EVIE POPPY ELLA "
    "CHARLOTTE EMILY ELSIE ALICE FLORENCE DAISY SIENNA LUNA MATILDA EVELYN HARPER RUBY JESSICA "
    "KATIE CHLOE HOLLY LEAH MOLLY ERIN MAISIE AMBER ZARA AISHA FATIMA MARYAM AMINA HANNAH "
    "LAUREN MEGAN ABIGAIL BETHANY COURTNEY SHANNON JADE TIA CAITLIN NIAMH "
    "MUHAMMAD NOAH OLIVER GEORGE LEO ARTHUR OSCAR HARRY THEODORE JACK CHARLIE FREDDIE ALFIE "
    "JACOB THOMAS WILLIAM JAMES JOSHUA ALEXANDER DANIEL SAMUEL MAX ETHAN LUCAS MASON LOGAN "
    "JOSEPH HENRY ISAAC ADAM RYAN DYLAN KYLE CONNOR LIAM JAYDEN TYLER CALLUM KIERAN REECE "
    "BRANDON LEWIS JAMIE ZAIN AYAAN YUSUF IBRAHIM OMAR ALI HASSAN BILAL KACPER JAKUB FILIP"
).split()
SURNAMES = (  # noqa: SIM905
    "SMITH JONES TAYLOR BROWN WILLIAMS WILSON JOHNSON DAVIES PATEL ROBINSON WRIGHT THOMPSON "
    "EVANS WALKER WHITE ROBERTS GREEN HALL THOMAS CLARKE JACKSON WOOD HARRIS EDWARDS TURNER "
    "MARTIN COOPER HILL WARD HUGHES MOORE CLARK KING HARRISON LEWIS BAKER LEE ALLEN MORRIS "
    "KHAN SCOTT WATSON DAVIS PARKER JAMES BENNETT YOUNG PHILLIPS RICHARDSON MITCHELL BAILEY "
    "CARTER COOK SINGH SHAW BELL COLLINS MORGAN KELLY BEGUM MILLER COX HUSSAIN MARSHALL "
    "SIMPSON PRICE ANDERSON ADAMS WILKINSON ALI WARD CHAPMAN MATTHEWS AHMED OKONKWO NOWAK "
    "KOWALSKI MURPHY OBI MENSAH RAHMAN IQBAL CHOUDHURY DOYLE OCONNOR MCDONALD CAMPBELL GRAHAM "
    "REID MURRAY STEWART ROSS HAMILTON FRASER MACDONALD PEARSON HOLMES BARKER FOSTER WEBB"
).split()
SECTORS = NHS_HELD  # the sectors, in the order SECTOR_SHARE weighs them
SECTOR_SHARE = [0.20, 0.15, 0.05, 0.25, 0.30, 0.05]
RECORDS = [1, 2, 3, 4, 5, 6]
RECORD_SHARE = [0.30, 0.25, 0.20, 0.12, 0.08, 0.05]
# The lists above hold the commonest names; in England and Wales the 100 commonest first names
# are given to about half of children and the 100 commonest surnames cover about a fifth of
# people. The rest come from a long tail of rarer names (made of syllables here).
FIRST_SHARE = 0.5
SURNAME_SHARE = 0.2
@dataclass(frozen=True, slots=True)
class Child:
    first: str
    surname: str
    born: date
    nhs: str
    postcode: str


@dataclass(frozen=True, slots=True)
class Record:
    child: int
    identity: NormalisedIdentity
    sector: Sector
    noise: tuple[str, ...]


SYLLABLES = ("KA", "LO", "MIR", "DEN", "SA", "RI", "TON", "BEL", "NA", "VE", "ZO", "HAR", "EL",
             "MA", "TI", "ROS", "AN", "DU", "KEL", "FI", "GO", "LIN", "PER", "WA", "YA", "BRO",
             "SHI", "QUI", "OM", "ET")


def _tail(rnd: random.Random, size: int) -> list[str]:
    """`size` rarer names made of syllables: real name lists have a long tail."""
    names: set[str] = set()
    while len(names) < size:
        names.add("".join(rnd.choice(SYLLABLES) for _ in range(rnd.choice((2, 3)))))
    return sorted(names)


def _zipf(rnd: random.Random, pool: list[str]) -> str:
    # Rank r drawn with weight 1 / (r + 10): some names are common, most are not.
    return rnd.choices(pool, weights=[1 / (r + 10) for r in range(len(pool))])[0]


def _name(rnd: random.Random, common: list[str], tail: list[str], share: float) -> str:
    """A name of the common list with probability `share`, else one of the long tail."""
    return _zipf(rnd, common) if rnd.random() < share else rnd.choice(tail)


def _postcode(rnd: random.Random) -> str:
    return (f"LS{rnd.randint(1, 29)}{rnd.randint(1, 9)}"
            f"{rnd.choice(LETTERS)}{rnd.choice(LETTERS)}")


def _nhs(rnd: random.Random) -> str:
    return "".join(str(rnd.randint(0, 9)) for _ in range(10))  # only equality matters here


def population(rnd: random.Random, n: int) -> list[Child]:
    first_tail, surname_tail = _tail(rnd, 3000), _tail(rnd, 20000)

    def first() -> str:
        return _name(rnd, FIRST, first_tail, FIRST_SHARE)

    children: list[Child] = []
    while len(children) < n:
        surname = _name(rnd, SURNAMES, surname_tail, SURNAME_SHARE)
        postcode = _postcode(rnd)
        born = TODAY - timedelta(days=rnd.randint(10 * 365, 18 * 365 - 1))
        children.append(Child(first(), surname, born, _nhs(rnd), postcode))
        roll = rnd.random()
        if roll < TWIN_SHARE:  # a twin: same birth date, surname and address, another first name
            name = first()
            while name == children[-1].first:
                name = first()
            children.append(Child(name, surname, born, _nhs(rnd), postcode))
        elif roll < TWIN_SHARE + SIBLING_SHARE:  # a sibling born at least a year apart
            other = born + timedelta(days=rnd.choice((-1, 1)) * rnd.randint(365, 5 * 365))
            if TODAY - timedelta(days=18 * 365) < other < TODAY - timedelta(days=10 * 365):
                children.append(Child(first(), surname, other, _nhs(rnd), postcode))
    return children[:n]


def noisy(rnd: random.Random, child: Child, sector: Sector) -> tuple[NormalisedIdentity,
                                                                     tuple[str, ...]]:
    e = entered(rnd, first_name=child.first, surname=child.surname, date_of_birth=child.born,
                nhs_number=child.nhs, postcode=child.postcode, sector=sector,
                other_surname=lambda: _zipf(rnd, SURNAMES),
                other_postcode=lambda: _postcode(rnd),
                births=(TODAY - timedelta(days=25 * 365), TODAY))
    return (NormalisedIdentity(e.first_name, e.surname, e.date_of_birth, e.nhs_number,
                               e.postcode), e.noise)


def world(seed: int, n: int) -> list[Record]:
    rnd = random.Random(seed)
    records = []
    for i, child in enumerate(population(rnd, n)):
        for _ in range(rnd.choices(RECORDS, RECORD_SHARE)[0]):
            sector = rnd.choices(list(SECTORS), SECTOR_SHARE)[0]
            identity, noise = noisy(rnd, child, sector)
            records.append(Record(i, identity, sector, noise))
    rnd.shuffle(records)  # arrival order
    return records


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def run(seed: int, n: int) -> dict[str, Any]:
    started = time.perf_counter()
    rules = load_rules(DEFAULT_RULES_PATH)
    records = world(seed, n)
    derived = derive([r.identity for r in records], BENCH_KEY)
    blocks = [k.linkage_block for k in derived]
    events = [_event(i, r, k) for i, (r, k) in enumerate(zip(records, derived, strict=True))]
    keyed_at = time.perf_counter()
    result: dict[str, Any] = {"seed": seed, "children": n, "records": len(records),
                              **measure(rules, records, blocks, events)}
    linked_at = time.perf_counter()
    result["noise_records"] = dict(sorted(Counter(x for r in records for x in r.noise).items()))
    result["records_with_nhs_number"] = sum(r.identity.nhs_number is not None for r in records)
    result["seconds_keys"] = round(keyed_at - started, 2)
    result["seconds_linking"] = round(linked_at - keyed_at, 2)
    result["seconds_total"] = round(time.perf_counter() - started, 2)
    return result


def _event(i: int, record: Record, k: DerivedKeys) -> WarningSignEvent:
    # One agency per sector (the child's school, police force, ...), whose vault gives the
    # child one handle for its own person reference, as the simulator's agencies do
    # (bench/detection_bench.py): the agency's records of one child share it.
    agency = f"{record.sector.value.lower().replace('_', '-')}-bench"
    handle = hashlib.md5(f"{agency}/{record.child}".encode()).hexdigest()
    subject = Subject(k.match_keys, k.key_epoch, k.linkage_block, 14, "E08000035", None, handle)
    when = T0 + (i % 1000) * 1000  # all within minutes: nothing late, nothing pruned
    return WarningSignEvent(hashlib.md5(f"record {i}".encode()).hexdigest(), agency,
                            record.sector, when, when, subject, Sign.CHANGE_IN_APPEARANCE)


def measure(rules: Rules, records: list[Record], blocks: list[int],
            events: list[WarningSignEvent]) -> dict[str, Any]:
    """Every event through `step` in its block, in arrival order; the pairwise figures."""
    states: dict[int, BlockState] = defaultdict(initial_state)
    owner = {e.event_id: i for i, e in enumerate(events)}
    for event, block in zip(events, blocks, strict=True):
        states[block], _ = step(rules, states[block], event)
    true_pairs = sum(_pairs(c) for c in Counter(r.child for r in records).values())
    predicted = correct = conflicted = merged_children = twin_merges = 0
    twins = _twin_children(records)
    cluster_of: dict[int, int] = {}
    for state in states.values():
        for cluster in state.clusters:
            members = [owner[o.event_id] for o in cluster.observations]
            for m in members:
                cluster_of[m] = id(cluster)
            by_child = Counter(records[m].child for m in members)
            predicted += _pairs(len(members))
            correct += sum(_pairs(c) for c in by_child.values())
            conflicted += cluster.conflict
            if len(by_child) > 1:
                merged_children += 1
                twin_merges += any(frozenset(p) in twins for p in _child_pairs(by_child))
    missed_blocks, missed_in_block, causes = _missed(records, blocks, cluster_of)
    return {
        "blocks": len(states),
        "clusters": sum(len(s.clusters) for s in states.values()),
        "true_pairs": true_pairs,
        "predicted_pairs": predicted,
        "correct_pairs": correct,
        "precision": round(correct / predicted, 5) if predicted else 1.0,
        "recall": round(correct / true_pairs, 5) if true_pairs else 1.0,
        "recall_within_block": round(correct / (true_pairs - missed_blocks), 5)
        if true_pairs > missed_blocks else 1.0,
        "missed_pairs_other_block": missed_blocks,
        "missed_pairs_same_block": missed_in_block,
        "missed_pairs_by_noise": dict(sorted(causes.items(), key=lambda kv: -kv[1])),
        "clusters_with_two_children": merged_children,
        "twin_pairs": len(twins),
        "twin_merges": twin_merges,
        "conflict_flagged_clusters": conflicted,
    }


def _child_pairs(by_child: Counter[int]) -> list[tuple[int, int]]:
    ids = sorted(by_child)
    return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]


def _twin_children(records: list[Record]) -> set[frozenset[int]]:
    """Pairs of children with the same true birth date, surname and postcode (twins)."""
    seen: dict[tuple[str, date, str | None], set[int]] = defaultdict(set)
    for r in records:
        if not r.noise:  # a clean record shows the true identity
            seen[(r.identity.surname, r.identity.date_of_birth, r.identity.postcode)].add(
                r.child)
    out: set[frozenset[int]] = set()
    for group in seen.values():
        ids = sorted(group)
        out.update(frozenset((a, b)) for i, a in enumerate(ids) for b in ids[i + 1:])
    return out


def _missed(records: list[Record], block_of: list[int],
            cluster_of: dict[int, int]) -> tuple[int, int, Counter[str]]:
    """True pairs not linked: across blocks, within a block, and each noise on either record."""
    by_child: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_child[r.child].append(i)
    other_block = same_block = 0
    causes: Counter[str] = Counter()
    for members in by_child.values():
        for x, a in enumerate(members):
            for b in members[x + 1:]:
                if cluster_of[a] == cluster_of[b]:
                    continue
                if block_of[a] != block_of[b]:
                    other_block += 1
                else:
                    same_block += 1
                found = {*records[a].noise, *records[b].noise} & IDENTITY_NOISE
                for cause in found or {"none (no name, birth date or NHS noise)"}:
                    causes[cause] += 1
    return other_block, same_block, causes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args(argv)
    result = run(args.seed, args.children)
    result["targets"] = {"precision": 0.999, "recall": 0.97}
    result["meets_targets"] = result["precision"] >= 0.999 and result["recall"] >= 0.97
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "linkage.json").write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
