"""A made-up population as the correlator sees it: pseudonymised events about children spread
over linkage blocks, for the correlator's recovery tests and the fault benchmark.

Every event carries its child's NHS-number key (so a child is one cluster from its first event)
plus some of the others, and all of a child's events fall within 25 days, inside the lateness
horizon: the final alerts do not depend on the order a processor happens to see the events in.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

from safehub.schemas.records import (
    IngressEvent,
    MatchKeys,
    MissingEpisodeEvent,
    Subject,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import (
    Indicator,
    MissingType,
    Sector,
    Sign,
    SignificantIncident,
    Vulnerability,
)

DAY_MS = 86_400_000
LOCAL_AUTHORITY = "E08000035"
# None, drawn like an indicator: the event is a missing episode (a day long).
INDICATORS: list[Indicator | None] = [*Sign, *list(Vulnerability)[:4],
                                      SignificantIncident.ABDUCTION, None]


def population(agencies: Mapping[str, Sector], events_per_child: Sequence[int], seed: int,
               t0_ms: int, blocks: int) -> list[IngressEvent]:
    """Child c has events_per_child[c] events from `agencies` (id -> sector), in block
    c % blocks, within 25 days after `t0_ms`; all children's events shuffled together."""
    rnd = random.Random(seed)
    names = sorted(agencies)
    out: list[IngressEvent] = []
    for c, count in enumerate(events_per_child):
        keys = {k: hashlib.sha256(f"{seed}:{c}:{k}".encode()).digest()
                for k in ("mk1", "mk2", "mk3", "mk4")}
        for n in range(count):
            agency = rnd.choice(names)
            chosen = {"mk1"} | set(rnd.sample(["mk2", "mk3", "mk4"], rnd.randint(0, 3)))
            subject = Subject(MatchKeys(**{k: keys[k] for k in chosen}), 1, c % blocks,
                              rnd.randint(11, 16), LOCAL_AUTHORITY, None,
                              hashlib.md5(f"r{seed}:{c}:{n}".encode()).hexdigest())
            eid = hashlib.md5(f"e{seed}:{c}:{n}".encode()).hexdigest()
            when = t0_ms + rnd.randint(0, 25 * 24) * 3_600_000
            indicator = rnd.choice(INDICATORS)
            if indicator is None:
                out.append(MissingEpisodeEvent(eid, agency, agencies[agency], when, when,
                                               subject, when + DAY_MS, MissingType.MISSING,
                                               True, False))
            else:
                out.append(WarningSignEvent(eid, agency, agencies[agency], when, when, subject,
                                            indicator))
    rnd.shuffle(out)
    return out
