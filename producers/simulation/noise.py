"""Identity noise: how an agency's data entry gets a child's identifiers wrong, record by record.

One model for every simulated world that measures linkage: the linkage benchmark's identities
(bench/linkage_bench.py) and the simulator's noisy world (trajectories.simulate(noise=True),
which bench/detection_bench.py scores), so that the linkage errors the one measures are the
ones that cost the other detection.

Rates per record (each draw from the RNG handed in):
- the NHS number is held at a rate that depends on the sector (health 95 %, social care 85 %,
  youth justice 50 %, police 45 %, school 35 %, voluntary 15 %); a held number with a typo
  fails its check digit and is dropped (1 %);
- first name: a nickname (ALEX for ALEXANDER) 3 %, a spelling variant (KATY for KATIE) 3 %, a
  typo 1.5 %; surname: a typo 1 %, another surname (a step-parent's, a double-barrelled one)
  1 %; date of birth: one digit wrong 0.7 %, day and month swapped 0.5 % (when both are 12 or
  less); postcode: the child moved (another postcode) 10 %, none recorded 5 %.
Families (per child, drawn when the population is made): 1.5 % of children are followed by a
twin (same surname, birth date and address, another first name: 3 % of children are twins) and
17.5 % by a sibling (same surname and address, born one to five years apart).

Names keep the case they came in (the simulator's are mixed case, accents included; the
linkage bench's upper case): normalisation folds them later, as for a real agency's export.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from safehub.schemas.vocabulary import Sector

NICKNAMES = {
    "ALEXANDER": "ALEX", "WILLIAM": "BILLY", "JOSHUA": "JOSH", "SAMUEL": "SAM",
    "THOMAS": "TOM", "JAMES": "JIMMY", "DANIEL": "DANNY", "JOSEPH": "JOE", "CHARLOTTE": "LOTTIE",
    "ELIZABETH": "BETH", "ABIGAIL": "ABBIE", "THEODORE": "TEDDY", "FLORENCE": "FLO",
    "MATILDA": "TILLY", "ISABELLA": "BELLA", "HENRY": "HARRY", "FREDDIE": "FRED",
    "JACOB": "JAKE", "CHRISTOPHER": "CHRIS", "JESSICA": "JESS", "EVELYN": "EVIE",
    "MUHAMMAD": "MO", "IBRAHIM": "IBBY", "BETHANY": "BETH", "KATIE": "KATE",
}
SPELLINGS = {
    "MUHAMMAD": "MOHAMMED", "KATIE": "KATY", "JESSICA": "JESICA", "ISABELLA": "ISABELA",
    "SOPHIA": "SOFIA", "JAYDEN": "JADEN", "ZARA": "ZARAH", "LEAH": "LEA", "AMELIA": "AMELIE",
    "CAITLIN": "KATELYN", "ERIN": "ERYN", "RYAN": "RIAN", "LEWIS": "LOUIS", "REECE": "RHYS",
    "KIERAN": "CIARAN", "ISAAC": "ISAAK", "AISHA": "AYESHA", "MOLLY": "MOLLIE",
    "MAISIE": "MAISY", "ZAIN": "ZAYN", "YUSUF": "YOUSEF", "CALLUM": "CALUM", "JAMIE": "JAMEY",
}
NHS_HELD: dict[Sector, float] = {  # how often an agency of the sector holds the NHS number
    Sector.HEALTH: 0.95, Sector.SOCIAL_CARE: 0.85, Sector.YOUTH_JUSTICE: 0.50,
    Sector.POLICE: 0.45, Sector.EDUCATION: 0.35, Sector.VOLUNTARY: 0.15,
}
TWIN_SHARE = 0.015
SIBLING_SHARE = 0.175
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The noise that can cost a link (postcodes do not link on their own: linking.py).
IDENTITY_NOISE = frozenset({"nickname", "spelling", "first-typo", "surname-typo", "other-surname",
                            "dob-typo", "dob-swap", "nhs-typo"})


@dataclass(frozen=True, slots=True)
class Entered:
    """One record's identifiers as the agency entered them, and the noise they carry."""

    first_name: str
    surname: str
    date_of_birth: date
    nhs_number: str | None
    postcode: str | None
    noise: tuple[str, ...]


def _cased(variant: str, like: str) -> str:
    return variant if like.isupper() else variant.title()


def typo(rnd: random.Random, word: str) -> str:
    """One keying slip: a letter left out, two letters swapped, or one letter wrong."""
    i = rnd.randrange(len(word))
    kind = rnd.random()
    if kind < 0.4 and len(word) > 2:
        return word[:i] + word[i + 1:]
    if kind < 0.7 and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    letter = rnd.choice(LETTERS)
    return word[:i] + (letter if word[i].isupper() else letter.lower()) + word[i + 1:]


def _dob_typo(rnd: random.Random, born: date, earliest: date, latest: date) -> date | None:
    """One digit of the year's end, the month or the day wrong, giving a real date that an
    agency's system would accept (not in the future, not older than its limit); else None."""
    text = list(born.isoformat())
    for _ in range(20):
        i = rnd.choice((2, 3, 6, 8, 9))
        text[i] = str(rnd.randint(0, 9))
        try:
            wrong = date.fromisoformat("".join(text))
        except ValueError:
            text = list(born.isoformat())
            continue
        if wrong != born and earliest <= wrong <= latest:
            return wrong
        text = list(born.isoformat())
    return None


def entered(
    rnd: random.Random, *, first_name: str, surname: str, date_of_birth: date,
    nhs_number: str, postcode: str, sector: Sector,
    other_surname: Callable[[], str], other_postcode: Callable[[], str],
    births: tuple[date, date],
) -> Entered:
    """The true identity as one record of an agency of `sector` holds it.

    `other_surname` and `other_postcode` draw a surname and a postcode of the world (they use
    the same RNG); `births` bounds the dates of birth the agency's system accepts.
    """
    noise: list[str] = []
    first, born = first_name, date_of_birth
    moved: str | None = postcode
    nhs: str | None = nhs_number if rnd.random() < NHS_HELD[sector] else None
    if nhs is not None and rnd.random() < 0.01:
        nhs = None
        noise.append("nhs-typo")
    roll = rnd.random()
    key = first.upper()
    if roll < 0.03 and key in NICKNAMES:
        first = _cased(NICKNAMES[key], first)
        noise.append("nickname")
    elif 0.03 <= roll < 0.06 and key in SPELLINGS:
        first = _cased(SPELLINGS[key], first)
        noise.append("spelling")
    elif 0.06 <= roll < 0.075:
        first = typo(rnd, first)
        noise.append("first-typo")
    roll = rnd.random()
    if roll < 0.01:
        surname = typo(rnd, surname)
        noise.append("surname-typo")
    elif roll < 0.02:
        surname = other_surname()
        noise.append("other-surname")
    roll = rnd.random()
    if roll < 0.007:
        wrong = _dob_typo(rnd, born, *births)
        if wrong is not None:
            born = wrong
            noise.append("dob-typo")
    elif roll < 0.012 and born.day <= 12 and born.day != born.month:
        born = date(born.year, born.day, born.month)
        noise.append("dob-swap")
    roll = rnd.random()
    if roll < 0.10:
        moved = other_postcode()
        noise.append("moved")
    elif roll < 0.15:
        moved = None
        noise.append("no-postcode")
    return Entered(first, surname, born, nhs, moved, tuple(noise))
