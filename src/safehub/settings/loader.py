"""The one way a SAFEHUB_* variable becomes a typed value: declare it, then `load` it.

A settings class is a frozen dataclass whose every field is declared with `setting(name, kind,
default, doc)`. `load(cls, env)` reads each variable once, parses it with its kind, and returns
the instance; any bad value is a `ConfigError` that names the variable and the rule it broke
("SAFEHUB_HEALTH_PORT must be an integer between 0 and 65535, got 'abc'"). A secret's value
never appears in an error, a repr or a str: secret kinds give a `Secret`, and the error of a
secret (or of a URL that may hold a password) says what was wrong, never what was given.

An unset variable and one set to blanks are the same: the default applies. An operator who
clears a variable in a deployment file means "not set", never "the empty string".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from safehub.errors import ConfigError

T = TypeVar("T")
_SPEC = "safehub.setting"


class Secret:
    """A secret read once; `reveal()` is the only way to its text, so that a settings object
    holding one can be printed, logged or put in an error message safely."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


class Invalid(ValueError):
    """Raised by a kind's parse; the loader turns it into a ConfigError naming the variable.
    Its text, if any, adds a detail to the rule (never the value of a secret)."""


class Kind(Generic[T]):
    """How a variable's text becomes a value. `rule` completes "NAME must be ..."."""

    rule: str = "text"
    secret: bool = False  # never echo the value (errors, repr)

    def parse(self, raw: str) -> T:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Kind[str]):
    """Any text; with a pattern, text that matches it in full (`rule` says which)."""

    pattern: str = ""
    rule: str = "text"

    def parse(self, raw: str) -> str:
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise Invalid()
        return raw


@dataclass(frozen=True)
class Integer(Kind[int]):
    low: int | None = None
    high: int | None = None

    @property
    def rule(self) -> str:  # type: ignore[override]
        return "an integer" + _bounds(self.low, self.high)

    def parse(self, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise Invalid() from None
        if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high):
            raise Invalid()
        return value


@dataclass(frozen=True)
class Number(Kind[float]):
    """A decimal number of `unit`; `above` is an exclusive lower bound, `low` an inclusive one."""

    unit: str = "seconds"
    low: float | None = None
    above: float | None = None
    high: float | None = None

    @property
    def rule(self) -> str:  # type: ignore[override]
        if self.above is not None:
            text = f"a number of {self.unit} more than {_num(self.above)}"
            return text + (f" and at most {_num(self.high)}" if self.high is not None else "")
        return f"a number of {self.unit}" + _bounds(self.low, self.high)

    def parse(self, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise Invalid() from None
        if value != value or (self.low is not None and value < self.low) or (  # NaN
                self.above is not None and value <= self.above) or (
                self.high is not None and value > self.high):
            raise Invalid()
        return value


@dataclass(frozen=True)
class Choice(Kind[str]):
    """One of a few words, case-insensitive; the value is the word in lower case."""

    options: tuple[str, ...] = ()

    @property
    def rule(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.options)

    def parse(self, raw: str) -> str:
        value = raw.lower()
        if value not in self.options:
            raise Invalid()
        return value


@dataclass(frozen=True)
class Names(Kind[tuple[str, ...]]):
    """A comma-separated list of names (blanks around and empty items ignored)."""

    rule: str = "a comma-separated list of names"

    def parse(self, raw: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in raw.split(",") if n.strip())
        if not names:
            raise Invalid()
        return names


@dataclass(frozen=True)
class HostPorts(Kind[str]):
    """host:port, or several separated by commas (Kafka's bootstrap servers)."""

    several: bool = True

    @property
    def rule(self) -> str:  # type: ignore[override]
        return "host:port[,host:port...]" if self.several else "host:port"

    def parse(self, raw: str) -> str:
        parts = raw.split(",") if self.several else [raw]
        for part in parts:
            host, colon, port = part.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise Invalid()
        return raw


@dataclass(frozen=True)
class FilePath(Kind[Path]):
    """A path; with `exists` ("file" or "folder"), one that must be there when loaded."""

    exists: str = ""

    @property
    def rule(self) -> str:  # type: ignore[override]
        return f"the path of an existing {self.exists}" if self.exists else "a path"

    def parse(self, raw: str) -> Path:
        path = Path(raw).expanduser()
        if (self.exists == "file" and not path.is_file()) or (
                self.exists == "folder" and not path.is_dir()):
            raise Invalid()
        return path


@dataclass(frozen=True)
class Url(Kind[str]):
    """A URL with one of `schemes` (`sqlite`, `postgresql+psycopg2`, `https`...). A database
    URL may hold a password, so a URL is never echoed in an error."""

    schemes: tuple[str, ...] = ()
    drivers: bool = False  # SQLAlchemy's scheme+driver (postgresql+psycopg2)
    secret: bool = True

    @property
    def rule(self) -> str:  # type: ignore[override]
        if not self.schemes:
            return "a URL (scheme://...)"
        driver = "[+driver]" if self.drivers else ""
        return "a URL starting with " + " or ".join(f"{s}{driver}://" for s in self.schemes)

    def parse(self, raw: str) -> str:
        scheme, sep, _rest = raw.partition("://")
        if self.drivers:
            scheme = scheme.partition("+")[0]
        if not sep or not scheme or (self.schemes and scheme not in self.schemes):
            raise Invalid()
        return raw


@dataclass(frozen=True)
class SecretText(Kind[Secret]):
    """A secret given in the variable itself (a file is better: `SecretFile`)."""

    rule: str = "a secret"
    secret: bool = True

    def parse(self, raw: str) -> Secret:
        return Secret(raw)


@dataclass(frozen=True)
class SecretFile(Kind[Secret]):
    """The path of a secret file, read once when the settings load: 0600, owned by the user
    running the service, not empty."""

    rule: str = "the path of a secret file (0600, owned by this user, not empty)"
    secret: bool = True

    def parse(self, raw: str) -> Secret:
        # Imported here: connection.py reads its own settings through this package.
        from safehub.connection import read_secret

        try:
            return Secret(read_secret(Path(raw).expanduser(), "the file"))
        except ConfigError as exc:
            raise Invalid(str(exc)) from None


@dataclass(frozen=True)
class Spec:
    """One variable: its name, how it is read, and a line for the settings table."""

    name: str
    kind: Kind[Any]
    doc: str
    shown: str = ""  # the default as the table shows it, when it is another module's choice


def setting(name: str, kind: Kind[Any], default: Any, doc: str, shown: str = "") -> Any:
    """A settings-class field read from variable `name` (typed `Any` so that the field's own
    annotation stands). A secret's field stays out of the class's repr."""
    return field(default=default, repr=not kind.secret,
                 metadata={_SPEC: Spec(name, kind, doc, shown)})


def specs(cls: type[Any]) -> list[tuple[Field[Any], Spec]]:
    """Each field of a settings class with its variable."""
    out = []
    for f in fields(cls):
        spec = f.metadata.get(_SPEC)
        if not isinstance(spec, Spec):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        out.append((f, spec))
    return out


def read(spec: Spec, raw: str) -> Any:
    """One variable's value, or a ConfigError naming it and its rule."""
    try:
        return spec.kind.parse(raw)
    except Invalid as exc:
        detail = f" ({exc})" if str(exc) else ""
        given = "" if spec.kind.secret else f", got {raw!r}"
        raise ConfigError(f"{spec.name} must be {spec.kind.rule}{given}{detail}") from None


def load(cls: type[T], env: Mapping[str, str] | None = None) -> T:
    """An instance of settings class `cls` from `env` (default: this process's environment)."""
    source: Mapping[str, str] = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f, spec in specs(cls):
        raw = source.get(spec.name, "").strip()
        if raw:
            values[f.name] = read(spec, raw)
    return cls(**values)


def default_of(f: Field[Any]) -> Any:
    return None if f.default is MISSING else f.default


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" between {_num(low)} and {_num(high)}"
    if low is not None:
        return f" of at least {_num(low)}"
    if high is not None:
        return f" of at most {_num(high)}"
    return ""


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
