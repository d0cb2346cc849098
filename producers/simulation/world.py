"""A synthetic world: local authorities, the agencies serving them, and the children they know.

Everything here is made up but shaped like the real thing: GSS codes with real prefixes, agency
ids as slugs, names with accents and apostrophes, valid NHS numbers (mod-11), postcodes in the
area's postcode district. A seed gives the same world, byte for byte: all randomness comes from
one `random.Random(seed)` passed in, never the global generator or the clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, timedelta

from safehub.producers.simulation.noise import SIBLING_SHARE, TWIN_SHARE
from safehub.schemas.vocabulary import Sector

# (GSS code, slug, postcode area, police force slug). Real codes, so routing tables look real;
# the first four have routes in deploy/routing.toml, York onwards exercise the fallback.
AUTHORITY_CATALOGUE: tuple[tuple[str, str, str, str], ...] = (
    ("E08000035", "leeds", "LS", "west-yorkshire"),
    ("E08000032", "bradford", "BD", "west-yorkshire"),
    ("E08000034", "kirklees", "HD", "west-yorkshire"),
    ("E09000033", "westminster", "W", "metropolitan"),
    ("E06000014", "york", "YO", "north-yorkshire"),
    ("E10000023", "north-yorkshire", "HG", "north-yorkshire"),
    ("E07000178", "oxford", "OX", "thames-valley"),
    ("E08000033", "calderdale", "HX", "west-yorkshire"),
    ("E08000036", "wakefield", "WF", "west-yorkshire"),
)

FIRST_NAMES: tuple[str, ...] = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Isabella", "Sophia", "Grace",
    "Freya", "Evie", "Ella", "Poppy", "Chloé", "Zoë", "Siobhán", "Aoife", "Amira", "Aisha",
    "Fatima", "Maryam", "Hannah", "Jessica", "Leah", "Niamh", "Kayleigh", "Chantelle",
    "Noah", "Oliver", "George", "Leo", "Arthur", "Muhammad", "Harry", "Oscar", "Jack", "Charlie",
    "Jacob", "Thomas", "Tyler", "Reece", "Kai", "Ethan", "Bartłomiej", "Zoltán", "Ciarán", "Dylan",
)
SURNAMES: tuple[str, ...] = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Wood", "Jackson", "Clarke", "Khan", "Hussain", "Ahmed", "Begum", "O'Brien", "McCarthy",
    "Nowak", "Kowalski", "Horváth", "Smith-Jones", "Ali", "Mahmood", "Kaur", "Singh", "Lewis",
    "Harris", "Martin", "Cooper", "Ward", "Hughes", "Edwards", "Turner", "Hill", "Moore", "Lee",
)
_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the inward code never uses C, I, K, M, O, V


@dataclass(frozen=True, slots=True)
class Authority:
    gss: str
    slug: str
    postcode_area: str
    police_force: str

    @property
    def lead_agency(self) -> str:
        """Children's social care of the authority: the hub that receives its alerts."""
        return f"csc-{self.slug}"


@dataclass(frozen=True, slots=True)
class Agency:
    agency_id: str
    sector: Sector
    areas: tuple[str, ...]  # GSS codes it serves (a police force serves several)


@dataclass(frozen=True, slots=True)
class Identity:
    """How a child is recorded: the true identity, or one agency's (possibly flawed) copy."""

    first_name: str
    surname: str
    date_of_birth: date
    nhs_number: str | None
    postcode: str | None


@dataclass(frozen=True, slots=True)
class Child:
    child_id: int  # simulation-only; never published
    identity: Identity
    home_authority: str  # GSS code of where the child lives
    # For a looked-after child placed out of area: the authority that placed them (responsible).
    placing_authority: str | None
    looked_after: bool


@dataclass(frozen=True, slots=True)
class World:
    authorities: tuple[Authority, ...]
    agencies: tuple[Agency, ...]
    children: tuple[Child, ...]

    def authority(self, gss: str) -> Authority:
        return next(a for a in self.authorities if a.gss == gss)

    def agency(self, sector: Sector, gss: str) -> Agency:
        """The agency of this sector serving this area."""
        return next(a for a in self.agencies if a.sector is sector and gss in a.areas)

    @property
    def agency_ids(self) -> tuple[str, ...]:
        return tuple(a.agency_id for a in self.agencies)


def nhs_check_digit(nine_digits: str) -> int | None:
    """The NHS number's mod-11 check digit, or None when the stem is not allowed (gives 10)."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(nine_digits))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def make_nhs_number(rng: random.Random) -> str:
    while True:
        stem = f"{rng.randrange(400_000_000, 799_999_999):09d}"
        check = nhs_check_digit(stem)
        if check is not None:
            return stem + str(check)


def make_postcode(rng: random.Random, area: str) -> str:
    district = rng.randrange(1, 30)
    inward = f"{rng.randrange(0, 10)}{rng.choice(_POSTCODE_LETTERS)}{rng.choice(_POSTCODE_LETTERS)}"
    return f"{area}{district} {inward}"


def make_agencies(authorities: tuple[Authority, ...]) -> tuple[Agency, ...]:
    agencies: list[Agency] = []
    forces = sorted({a.police_force for a in authorities})
    for force in forces:
        areas = tuple(a.gss for a in authorities if a.police_force == force)
        agencies.append(Agency(f"police-{force}", Sector.POLICE, areas))
    for a in authorities:
        agencies.extend(
            (
                Agency(f"education-{a.slug}", Sector.EDUCATION, (a.gss,)),
                Agency(f"health-{a.slug}", Sector.HEALTH, (a.gss,)),
                Agency(f"social-care-{a.slug}", Sector.SOCIAL_CARE, (a.gss,)),
                Agency(f"youth-justice-{a.slug}", Sector.YOUTH_JUSTICE, (a.gss,)),
                Agency(f"voluntary-{a.slug}", Sector.VOLUNTARY, (a.gss,)),
            )
        )
    return tuple(agencies)


def make_world(
    rng: random.Random,
    *,
    children: int,
    authorities: int,
    start: date,
    looked_after_share: float = 0.02,
    placed_out_share: float = 0.5,
) -> World:
    """Children aged 9 to 17 on `start`, spread over the first `authorities` of the catalogue."""
    if not 1 <= authorities <= len(AUTHORITY_CATALOGUE):
        raise ValueError(f"authorities must be 1..{len(AUTHORITY_CATALOGUE)}")
    las = tuple(Authority(*row) for row in AUTHORITY_CATALOGUE[:authorities])
    kids: list[Child] = []
    for child_id in range(children):
        home = rng.choice(las)
        age_days = rng.randrange(9 * 365, 18 * 365 - 30)
        identity = Identity(
            first_name=rng.choice(FIRST_NAMES),
            surname=rng.choice(SURNAMES),
            date_of_birth=start - timedelta(days=age_days),
            nhs_number=make_nhs_number(rng),
            postcode=make_postcode(rng, home.postcode_area),
        )
        looked_after = rng.random() < looked_after_share
        placing = None
        if looked_after and len(las) > 1 and rng.random() < placed_out_share:
            placing = rng.choice([a for a in las if a.gss != home.gss]).gss
        kids.append(Child(child_id, identity, home.gss, placing, looked_after))
    return World(las, make_agencies(las), tuple(kids))


def with_families(rng: random.Random, world: World, start: date) -> World:
    """The world with families: some children become a twin or a sibling of the child before.

    Rates from producers/simulation/noise.py. A twin takes the previous child's surname and
    birth date, with another first name; a sibling the surname, born one to five years apart
    (within the world's ages); both share the previous child's address when they live in the
    same authority. Only identities change: each child keeps its id, NHS number, authority and
    care status.
    """
    kids = list(world.children)
    youngest, oldest = start - timedelta(days=9 * 365), start - timedelta(days=18 * 365 - 30)
    for i in range(1, len(kids)):
        roll = rng.random()
        if roll >= TWIN_SHARE + SIBLING_SHARE:
            continue
        prev, child = kids[i - 1].identity, kids[i]
        first = rng.choice(FIRST_NAMES)
        while first == prev.first_name:
            first = rng.choice(FIRST_NAMES)
        born = prev.date_of_birth
        if roll >= TWIN_SHARE:
            other = born + timedelta(days=rng.choice((-1, 1)) * rng.randint(365, 5 * 365))
            born = other if oldest <= other <= youngest else child.identity.date_of_birth
        same_home = child.home_authority == kids[i - 1].home_authority
        postcode = prev.postcode if same_home else child.identity.postcode
        kids[i] = replace(child, identity=Identity(first, prev.surname, born,
                                                   child.identity.nhs_number, postcode))
    return replace(world, children=tuple(kids))
