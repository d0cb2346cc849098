"""Fictional children, as an agency's case system would hold them, and warning signs about them:
for the publisher's tests, the privacy canary (which looks for these identifiers where none may
be) and the publishing and latency benchmarks. Every name, date, NHS number and postcode here
is made up (the NHS numbers have valid check digits so that normalisation accepts them)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from safehub.producers.linkagekey import LinkageKey
from safehub.producers.records import ChildIdentity, SignRecord
from safehub.schemas.vocabulary import Sign

# A version-1 (HMAC) linkage key for agencies keyed without the key service.
KEY = LinkageKey(bytes.fromhex("5a" * 40), epoch=2)
FIRST = ["Amelia", "Isabella", "Olivia", "Jessica", "Tyler", "Jayden", "Chloe", "Aaliyah",
         "Mohammed", "Harrison", "Freya", "Poppy", "Imogen", "Kieran", "Declan", "Niamh",
         "Siobhan", "Zainab", "Oluwaseun", "Precious", "Kayleigh", "Shannon", "Tiegan",
         "Leighton", "Brandon", "Callum", "Rhiannon", "Zoë", "Renée", "Małgorzata"]
SURNAMES = ["Okonkwo", "Haddock", "Mensah", "Kowalski", "Nwachukwu", "Fitzgerald", "Przybylski",
            "Achterberg", "Featherstone", "Ramsbottom", "Higginbotham", "Szymanski",
            "O'Brien-Walsh", "Abubakar", "Vasquez", "Oyelaran", "Kaczmarek", "Blackwood",
            "Whitfield", "Pemberton", "Núñez", "Ó Súilleabháin"]
OUTWARD = ["LS9", "LS6", "LS11", "BD7", "BD3", "M14", "WF1", "HX1", "S10", "YO31"]
EVENT_DAY = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def nhs_with_check(rng: random.Random) -> str:
    while True:
        digits = [rng.randint(0, 9) for _ in range(9)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def children(n: int, seed: int = 1) -> list[ChildIdentity]:
    """n fictional children, each with a distinct name pair, DOB, NHS number and postcode."""
    rng = random.Random(seed)
    out: list[ChildIdentity] = []
    seen: set[tuple[str, str, date]] = set()
    while len(out) < n:
        first, surname = rng.choice(FIRST), rng.choice(SURNAMES)
        born = date(2006, 1, 1) + timedelta(days=rng.randrange(365 * 10))
        if (first, surname, born) in seen:
            continue
        seen.add((first, surname, born))
        letters = "ABDEFGHJLNPQRSTUWXYZ"
        postcode = f"{rng.choice(OUTWARD)} {rng.randint(1, 9)}{rng.choice(letters)}" \
                   f"{rng.choice(letters)}"
        out.append(ChildIdentity(first, surname, born.isoformat(), nhs_with_check(rng), postcode))
    return out


def sign_records(kids: list[ChildIdentity], prefix: str) -> list[SignRecord]:
    signs = list(Sign)
    return [
        SignRecord(
            record_ref=f"{prefix}-{i:06d}",
            identity=kid,
            local_authority="E08000035",
            occurred_at=int((EVENT_DAY + timedelta(minutes=i)).timestamp() * 1000),
            indicator=signs[i % len(signs)],
            person_ref=f"P{hash((kid.first_name, kid.surname, kid.date_of_birth)) & 0xFFFFFF:x}",
        )
        for i, kid in enumerate(kids)
    ]


def sign_record(ref: str, i: int = 0) -> SignRecord:
    """One well-formed warning sign about a fictional child."""
    return sign_records(children(i + 1, seed=3)[i:], ref)[0]
