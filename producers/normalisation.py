"""Normalisation of a child's identifiers before they are hashed into match keys.

Two agencies can only link a child if they feed byte-identical text into the keyed hash, so
every identifier is brought to one canonical form here: names are Unicode-NFKD-decomposed,
folded to ASCII, upper-cased and stripped of anything but letters and digits; NHS numbers are
ten digits with a valid mod-11 check digit; dates are ISO; postcodes are upper case without
spaces.

Pure: no clock, no I/O. Every failure is a `ValidationError(field, rule)` whose text names the
field and the broken rule and never the value, because error text ends up in logs and reports.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime

from safehub.errors import ValidationError

# UK postcode shape after removing spaces: outward code (2-4 chars) + inward code (digit, 2
# letters). GIR 0AA is the one historic exception still in use.
_POSTCODE = re.compile(r"^(?:[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}|GIR0AA)$")
# GSS codes of the local authorities that can lead on a child (DOMAIN.md), and Welsh unitary
# authorities (W06), which the contract also accepts for the forces of England and Wales.
_GSS_LOCAL_AUTHORITY = re.compile(r"^(?:E0[6-9]|E10|W06)[0-9]{6}$")
_NHS_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_NOT_ALNUM = re.compile(r"[^A-Z0-9]")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Formats an export may declare for its date columns; ISO is the default.
DATE_FORMATS: dict[str, str] = {
    "ISO": "%Y-%m-%d",
    "DD/MM/YYYY": "%d/%m/%Y",
    "DD-MM-YYYY": "%d-%m-%Y",
    "DD.MM.YYYY": "%d.%m.%Y",
    "YYYYMMDD": "%Y%m%d",
}


def fold(text: str) -> str:
    """NFKD, drop what has no ASCII form (accents), upper case, keep only A-Z and 0-9."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = decomposed.encode("ascii", "ignore").decode("ascii")
    return _NOT_ALNUM.sub("", ascii_only.upper())


def name(text: str | None, field: str) -> str:
    if text is None:
        raise ValidationError(field, "required")
    folded = fold(text)
    if not folded:
        raise ValidationError(field, "no letters after normalisation")
    if not any(ch.isalpha() for ch in folded):
        raise ValidationError(field, "a name must contain letters")
    return folded


def nhs_number(text: str | None, field: str = "nhs_number") -> str | None:
    """Ten digits whose last is the mod-11 check digit; spaces and hyphens are allowed between."""
    if text is None or not text.strip():
        return None
    compact = re.sub(r"[\s-]", "", text)
    if not (len(compact) == 10 and compact.isascii() and compact.isdigit()):
        raise ValidationError(field, "must be 10 digits")
    total = sum(int(d) * w for d, w in zip(compact[:9], _NHS_WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    # A remainder giving 10 means the number was never issued.
    if check == 10 or check != int(compact[9]):
        raise ValidationError(field, "mod-11 check digit does not match")
    return compact


def calendar_date(text: str | None, field: str, fmt: str = "ISO") -> date:
    if text is None or not text.strip():
        raise ValidationError(field, "required")
    pattern = DATE_FORMATS.get(fmt)
    if pattern is None:
        raise ValidationError(field, f"unknown date format {fmt!r} in the column mapping")
    try:
        if fmt == "ISO":
            # date.fromisoformat is many times faster than strptime, but also accepts other ISO
            # shapes (20090314, 2009-W11-6); the pattern keeps the declared format strict.
            if _ISO_DATE.fullmatch(text.strip()) is None:
                raise ValueError
            return date.fromisoformat(text.strip())
        return datetime.strptime(text.strip(), pattern).date()
    except ValueError:
        # strptime's own message quotes the value: never let it through.
        raise ValidationError(field, f"not a date in format {fmt}") from None


def postcode(text: str | None, field: str = "postcode") -> str | None:
    if text is None or not text.strip():
        return None
    compact = fold(text)
    if not _POSTCODE.match(compact):
        raise ValidationError(field, "not a UK postcode")
    return compact


def local_authority(text: str | None, field: str) -> str:
    if text is None or not text.strip():
        raise ValidationError(field, "required")
    code = text.strip().upper()
    if not _GSS_LOCAL_AUTHORITY.match(code):
        raise ValidationError(field, "not a local authority GSS code (E06-E10, W06)")
    return code


def age_in_years(born: date, on: date) -> int:
    """Completed years on `on`; a child born on 29 February has a birthday on 1 March."""
    had_birthday = (on.month, on.day) >= (born.month, born.day)
    return on.year - born.year - (0 if had_birthday else 1)


@dataclass(frozen=True, slots=True)
class NormalisedIdentity:
    """Canonical identifiers, ready for hashing. Never leaves the agency, never printed."""

    first_name: str
    surname: str
    date_of_birth: date
    nhs_number: str | None
    postcode: str | None

    def __repr__(self) -> str:
        # Defence in depth: a stray log line or traceback must not print who the child is.
        return "NormalisedIdentity(<redacted>)"

    __str__ = __repr__
