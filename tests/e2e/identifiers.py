"""The simulated children's identifiers in the forms systems hold them, and a search for them.

Used by the whole-pipeline privacy canary (tests/e2e/test_privacy_pipeline.py). The search has
two modes, because short names collide with chance bytes:

- `in_bytes` (any bytes: Kafka keys, values, headers, database files): every form of five
  characters or more as a plain substring; pure-digit forms (a date as 20100314, an NHS number
  without spaces) only where not inside a longer digit run. Single names shorter than five
  characters are not searched here: four or three given letters turn up in a few hundred KB of
  hashes by chance, and "Lee" is inside "Leeds", "Ward" inside "forward".
- `in_text` (what decodes as text: log lines, decoded record fields, database cells): all of the
  above, plus every single-name form of any length as a whole word (not preceded or followed by
  a letter), so "Ava" or "Lee" is found in "child Ava Lee" but not in "csc-leeds".

Both modes first blank out machine-made random tokens: runs of 32 or more hex digits (ids,
handles, hashes), runs of 16 or more that mix hex letters and digits (the demo's generated
password, 18 hex digits, once held "aa" between two digits: a whole word to this search, and a
two-letter simulated first name), and padded base64 of 16 or more characters (how the
correlator's block states write ids and match keys), and PEM blocks (the certificates and keys
of the local CA, the key service and the web pages: one held "+aa4" in its base64). They are
random or keyed hashes, so a name or a date inside one is a coincidence, not a leak; leaving
them in makes the search flaky rather than stricter. A run of digits alone is never blanked
below 32, so dates and NHS numbers that touch other digits are still searched. In text only, also
blanked: `secrets.token_urlsafe` output and unpadded base64 (32 or more of A-Z, a-z, 0-9, "-",
"_", "+" and "/" with all of upper case, lower case and digits), such as the key service's
operator secret, which once held "-ai6": a two-letter simulated surname as a whole word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum

from safehub.errors import ValidationError
from safehub.producers.normalisation import fold
from safehub.producers.simulation.trajectories import Population
from safehub.producers.simulation.world import Identity
from safehub.schemas import codec

FIRST_NAME, SURNAME, FULL_NAME = "first name", "surname", "full name"
DATE_OF_BIRTH, NHS_NUMBER, POSTCODE = "date of birth", "NHS number", "postcode"
RECORD_REF, PERSON_REF = "record reference", "person reference"
SINGLE_NAMES = frozenset({FIRST_NAME, SURNAME})
MIN_RAW_NAME = 5  # characters: shorter single names are searched only as words in text

_PEM = r"-----BEGIN [A-Z0-9 ]+-----[\s\S]*?-----END [A-Z0-9 ]+-----"
_RANDOM_BYTES = re.compile(_PEM.encode() + rb"|[0-9a-fA-F]{16,}|[A-Za-z0-9+/]{16,}={1,2}")
_RANDOM_TEXT = re.compile(_PEM + r"|[0-9a-fA-F]{16,}|[A-Za-z0-9+/]{16,}={1,2}")
# `secrets.token_urlsafe` (session ids, the key service's operator secret) and unpadded
# standard base64: 32 characters or more; blanked only when it mixes upper case, lower case and
# digits, and only in text. In bytes a database packs fields side by side (a record reference
# beside a handle makes such a run), and short names are not searched there anyway. It runs
# after the padded base64 is blanked whole: run first, it once blanked a signature up to its
# "/" and left "/AA=", a two-letter simulated first name as a whole word.
_URLSAFE_TEXT = re.compile(r"[A-Za-z0-9_+/-]{32,}")
_UPPER, _LOWER = re.compile(r"[A-Z]"), re.compile(r"[a-z]")
_HEX_LETTERS = re.compile(r"[a-fA-F]")
_DIGITS = re.compile(r"[0-9]")
_BLANK = " "


def _blanked(token: str) -> str:
    random = (len(token) >= 32 or token.endswith("=")
              or (_HEX_LETTERS.search(token) is not None and _DIGITS.search(token) is not None))
    return _BLANK * len(token) if random else token


def _blank_text(m: re.Match[str]) -> str:
    return _blanked(m.group())


def _blank_urlsafe(m: re.Match[str]) -> str:
    token = m.group()
    random = all(p.search(token) for p in (_UPPER, _LOWER, _DIGITS))
    return _BLANK * len(token) if random else token


def _blank_bytes(m: re.Match[bytes]) -> bytes:
    return _blanked(m.group().decode("ascii")).encode("ascii")  # both patterns are ASCII


@dataclass(frozen=True, slots=True, order=True)
class Identifier:
    kind: str
    value: str


def identity_identifiers(identity: Identity) -> set[Identifier]:
    found = {
        Identifier(FIRST_NAME, identity.first_name),
        Identifier(SURNAME, identity.surname),
        Identifier(FULL_NAME, f"{identity.first_name} {identity.surname}"),
        Identifier(DATE_OF_BIRTH, identity.date_of_birth.isoformat()),
    }
    if identity.nhs_number:
        found.add(Identifier(NHS_NUMBER, identity.nhs_number))
    if identity.postcode:
        found.add(Identifier(POSTCODE, identity.postcode))
    return found


def record_identifiers(pop: Population) -> set[Identifier]:
    """What the agencies' records hold: their (misspelt, outdated) copies and their references."""
    found: set[Identifier] = set()
    for record in pop.records:
        found |= identity_identifiers(record.identity)
        found.add(Identifier(RECORD_REF, record.record_ref))
        found.add(Identifier(PERSON_REF, record.person_ref))
    return found


def population_identifiers(pop: Population) -> set[Identifier]:
    """The records' identifiers and every child's true identity, recorded or not."""
    found = record_identifiers(pop)
    for child in pop.world.children:
        found |= identity_identifiers(child.identity)
    return found


def forms(ident: Identifier) -> set[str]:
    """The spellings a system might hold this identifier in, each also as JSON writes it by
    default (non-ASCII letters as \\u escapes: "Bart\\u0142omiej"), as a sealed answer's
    plaintext or a `json.dumps` in a log line would hold it."""
    spelt = _spellings(ident)
    return spelt | {json.dumps(f)[1:-1] for f in spelt}


def _spellings(ident: Identifier) -> set[str]:
    v = ident.value
    if ident.kind in SINGLE_NAMES:
        return {v, fold(v), v.upper(), v.lower(), v.title()}
    if ident.kind == FULL_NAME:
        first, _, surname = v.partition(" ")
        return {v, v.upper(), v.lower(), fold(first) + fold(surname), fold(surname) + fold(first),
                f"{surname}, {first}", f"{surname.upper()}, {first.upper()}"}
    if ident.kind == DATE_OF_BIRTH:
        y, m, d = v.split("-")
        months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")
        full = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")
        return {v, f"{d}/{m}/{y}", f"{d}-{m}-{y}", f"{d}.{m}.{y}", f"{d}{m}{y}", f"{y}{m}{d}",
                f"{y}/{m}/{d}", f"{int(d)}/{int(m)}/{y}", f"{d} {months[int(m) - 1]} {y}",
                f"{d} {full[int(m) - 1]} {y}"}
    if ident.kind == NHS_NUMBER:
        return {v, f"{v[:3]} {v[3:6]} {v[6:]}", f"{v[:3]}-{v[3:6]}-{v[6:]}"}
    if ident.kind == POSTCODE:
        compact = v.replace(" ", "")
        return {v, compact, v.lower(), compact.lower()}
    return {v, v.lower()}


Trie = dict[str, "Trie"]


def _alternation(words: Iterable[str]) -> str:
    """A regex matching any of `words`, as a trie, so one pass finds them all."""
    trie: Trie = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def render(node: Trie) -> str:
        branches = [re.escape(ch) + render(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = "(?:" + "|".join(branches) + ")"
        return body + "?" if "" in node else body

    return render(trie)


def _bytes_pattern(words: Iterable[str], around: tuple[str, str] = ("", "")) -> re.Pattern[bytes]:
    # One character per byte (latin-1 over the UTF-8), so the same trie works on bytes.
    alt = _alternation(w.encode("utf-8").decode("latin-1") for w in words)
    return re.compile(f"(?=({around[0]}{alt}{around[1]}))".encode("latin-1"))


@dataclass(frozen=True, slots=True)
class Hit:
    form: str
    at: int
    context: str  # a few characters around, for the failure message


class Search:
    def __init__(self, identifiers: Iterable[Identifier]) -> None:
        self.owner: dict[str, set[Identifier]] = {}
        for ident in identifiers:
            for form in forms(ident):
                self.owner.setdefault(form, set()).add(ident)
        digits = {f for f in self.owner if f.isdigit()}
        words = {f for f, owners in self.owner.items()
                 if any(o.kind in SINGLE_NAMES for o in owners)}
        plain = {f for f in self.owner if f not in digits
                 and (f not in words or len(f) >= MIN_RAW_NAME)}
        self.counts = {"forms": len(self.owner), "digit forms": len(digits),
                       "plain forms": len(plain), "name word forms": len(words)}
        self._bytes_plain = _bytes_pattern(plain)
        self._bytes_digits = _bytes_pattern(digits, ("(?<![0-9])", "(?![0-9])"))
        self._text_plain = re.compile(f"(?=({_alternation(plain)}))")
        self._text_digits = re.compile(f"(?=((?<![0-9]){_alternation(digits)}(?![0-9])))")
        not_letter_before, not_letter_after = r"(?<![^\W\d_])", r"(?![^\W\d_])"
        self._text_words = re.compile(
            f"(?=({not_letter_before}{_alternation(words)}{not_letter_after}))")

    def _prefixes(self, match: str) -> Iterator[str]:
        # The trie takes the longest form at a place; shorter forms ending inside it count too.
        for end in range(1, len(match) + 1):
            if match[:end] in self.owner:
                yield match[:end]

    def in_bytes(self, data: bytes) -> list[Hit]:
        data = _RANDOM_BYTES.sub(_blank_bytes, data)
        hits: dict[tuple[str, int], Hit] = {}
        for pattern in (self._bytes_plain, self._bytes_digits):
            for m in pattern.finditer(data):
                found = m.group(1).decode("utf-8", "replace")
                context = data[max(0, m.start() - 30):m.start() + len(m.group(1)) + 30]
                for form in self._prefixes(found):
                    hits[form, m.start()] = Hit(form, m.start(), repr(context))
        return list(hits.values())

    def in_text(self, text: str) -> list[Hit]:
        text = _URLSAFE_TEXT.sub(_blank_urlsafe, _RANDOM_TEXT.sub(_blank_text, text))
        hits: dict[tuple[str, int], Hit] = {}  # a long name is both a substring and a word
        for pattern in (self._text_plain, self._text_digits, self._text_words):
            for m in pattern.finditer(text):
                context = text[max(0, m.start() - 30):m.start() + len(m.group(1)) + 30]
                forms_here = (self._prefixes(m.group(1)) if pattern is not self._text_words
                              else [m.group(1)])
                for form in forms_here:
                    hits[form, m.start()] = Hit(form, m.start(), repr(context))
        return list(hits.values())

    def identifiers(self, hits: Iterable[Hit]) -> set[Identifier]:
        return {ident for h in hits for ident in self.owner[h.form]}


def as_text(data: bytes) -> str | None:
    """`data` as text if it is printable UTF-8 (a JSON block state, a log), else None.

    Unprintable bytes that happen to decode (a 4-byte partition key) are left to `in_bytes`:
    read as text they would only add chance whole-word matches.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = all(ch.isprintable() or ch in "\n\r\t" for ch in text)
    return text if printable and text else None


def record_strings(value: object) -> Iterator[str]:
    """Every string, enum symbol and number inside a decoded record, nested bytes decoded too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Enum):
        yield str(value.value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        yield str(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        yield from bytes_strings(bytes(value))
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from record_strings(getattr(value, f.name))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from record_strings(k)
            yield from record_strings(v)
    elif isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            yield from record_strings(item)
    else:
        yield str(value)


def bytes_strings(data: bytes) -> Iterator[str]:
    """The text in some bytes: a contract record's fields (the codec), or printable UTF-8."""
    if data[:2] == codec.MARKER:
        try:
            record = codec.decode(data)
        except ValidationError:
            pass  # marker by chance, or a damaged record: the raw bytes are searched anyway
        else:
            yield from record_strings(record)
            return
    text = as_text(data)
    if text is not None:
        yield text
