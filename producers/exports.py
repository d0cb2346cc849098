"""Reading an agency's export (CSV or JSON Lines) through its column mapping.

A mapping (TOML, one per agency system; examples per sector in producers/examples/) names the
export's columns for each field the publisher needs, the formats of its dates and times, and how
its own concern codes translate into the contract's vocabulary. Columns the mapping does not
name, such as case notes, are never read.

A line that cannot be used becomes a `LineError(line, field, rule)`; the rest of the file still
goes. No error text quotes a value: values are identities, and error text ends up in logs.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from safehub.config_files import read_toml
from safehub.errors import ConfigError, ValidationError
from safehub.producers.normalisation import DATE_FORMATS
from safehub.producers.records import (
    AgencyRecord,
    ChildIdentity,
    MissingEpisodeRecord,
    SignRecord,
)
from safehub.schemas.vocabulary import MissingType, Sector, indicator_from_symbol

EXAMPLES_DIR = Path(__file__).with_name("examples")
MISSING_EPISODE = "MISSING_EPISODE"  # the code target that makes a row a missing episode
REQUIRED_COLUMNS = ("record_ref", "first_name", "surname", "date_of_birth", "local_authority",
                    "occurred_at", "indicator")
OPTIONAL_COLUMNS = ("person_ref", "nhs_number", "postcode", "placing_authority", "reported_at",
                    "ended_at", "missing_type", "return_interview_offered",
                    "return_interview_done")
_TRUE = {"Y", "YES", "TRUE", "1"}
_FALSE = {"N", "NO", "FALSE", "0", ""}


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    sector: Sector
    columns: Mapping[str, str]  # our field -> the export's column (or JSON key)
    codes: Mapping[str, str]  # the agency's code -> vocabulary symbol or MISSING_EPISODE
    missing_types: Mapping[str, MissingType] = field(default_factory=dict)
    date_format: str = "ISO"  # of date_of_birth: a key of normalisation.DATE_FORMATS
    time_format: str = "ISO"  # of times: "ISO" (ISO 8601) or a strptime pattern
    timezone: str = "Europe/London"  # for times without an offset


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    field: str
    rule: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.rule}"


def load_mapping(path: Path) -> ColumnMapping:
    raw = read_toml(path, "column mapping")
    try:
        sector = Sector(raw["sector"])
    except (KeyError, ValueError):
        raise ConfigError(f"column mapping {path}: sector must be one of "
                          f"{', '.join(s.value for s in Sector)}") from None
    columns = {str(k): str(v) for k, v in raw.get("columns", {}).items()}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        raise ConfigError(f"column mapping {path}: missing columns {missing}, unknown {unknown}")
    codes = {str(k): str(v) for k, v in raw.get("codes", {}).items()}
    for code, symbol in codes.items():
        if symbol != MISSING_EPISODE:
            try:
                indicator_from_symbol(symbol)
            except KeyError:
                raise ConfigError(f"column mapping {path}: code {code!r} maps to unknown "
                                  f"symbol {symbol!r}") from None
    try:
        missing_types = {str(k): MissingType(v) for k, v in raw.get("missing_types", {}).items()}
    except ValueError:
        raise ConfigError(f"column mapping {path}: missing_types must map to MISSING or "
                          "ABSENT") from None
    date_format = str(raw.get("date_format", "ISO"))
    if date_format not in DATE_FORMATS:
        raise ConfigError(f"column mapping {path}: date_format must be one of "
                          f"{', '.join(DATE_FORMATS)}")
    timezone = str(raw.get("timezone", "Europe/London"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"column mapping {path}: unknown timezone {timezone!r}") from None
    return ColumnMapping(sector, columns, codes, missing_types, date_format,
                         str(raw.get("time_format", "ISO")), timezone)


def example_mapping(sector: Sector) -> Path:
    return EXAMPLES_DIR / f"{sector.value.lower()}.toml"


# -- one row -> one record (pure) ------------------------------------------------------------
def _text(row: Mapping[str, Any], mapping: ColumnMapping, name: str) -> str | None:
    column = mapping.columns.get(name)
    if column is None:
        return None
    value = row.get(column)
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text.strip() or None


def _required(row: Mapping[str, Any], mapping: ColumnMapping, name: str) -> str:
    text = _text(row, mapping, name)
    if text is None:
        raise ValidationError(name, "required")
    return text


def _time_ms(text: str | None, name: str, mapping: ColumnMapping) -> int | None:
    if text is None:
        return None
    try:
        if mapping.time_format == "ISO":
            moment = datetime.fromisoformat(text)
        else:
            moment = datetime.strptime(text, mapping.time_format)
    except ValueError:
        raise ValidationError(name, f"not a time in format {mapping.time_format}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(mapping.timezone))
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _flag(text: str | None, name: str) -> bool:
    value = (text or "").upper()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(name, "not a yes/no value")


def parse_row(row: Mapping[str, Any], mapping: ColumnMapping) -> AgencyRecord:
    """Raise ValidationError(field, rule) for the first field that cannot be used."""
    identity = ChildIdentity(
        first_name=_required(row, mapping, "first_name"),
        surname=_required(row, mapping, "surname"),
        date_of_birth=_required(row, mapping, "date_of_birth"),
        nhs_number=_text(row, mapping, "nhs_number"),
        postcode=_text(row, mapping, "postcode"),
        date_format=mapping.date_format,
    )
    code = _required(row, mapping, "indicator")
    symbol = mapping.codes.get(code)
    if symbol is None:
        raise ValidationError("indicator", "code not in the column mapping")
    occurred_at = _time_ms(_required(row, mapping, "occurred_at"), "occurred_at", mapping)
    assert occurred_at is not None
    common: dict[str, Any] = {
        "record_ref": _required(row, mapping, "record_ref"),
        "identity": identity,
        "local_authority": _required(row, mapping, "local_authority"),
        "occurred_at": occurred_at,
        "reported_at": _time_ms(_text(row, mapping, "reported_at"), "reported_at", mapping),
        "placing_authority": _text(row, mapping, "placing_authority"),
        "person_ref": _text(row, mapping, "person_ref"),
    }
    if symbol != MISSING_EPISODE:
        return SignRecord(indicator=indicator_from_symbol(symbol), **common)
    type_code = _required(row, mapping, "missing_type")
    missing_type = mapping.missing_types.get(type_code)
    if missing_type is None:
        raise ValidationError("missing_type", "code not in the column mapping")
    return MissingEpisodeRecord(
        missing_type=missing_type,
        ended_at=_time_ms(_text(row, mapping, "ended_at"), "ended_at", mapping),
        return_interview_offered=_flag(_text(row, mapping, "return_interview_offered"),
                                       "return_interview_offered"),
        return_interview_done=_flag(_text(row, mapping, "return_interview_done"),
                                    "return_interview_done"),
        **common,
    )


# -- files -------------------------------------------------------------------------------------
def export_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ConfigError(f"{path}: cannot tell the format from the name; use .csv or .jsonl")


def count_rows(path: Path) -> int:
    """Data rows in the file (for the progress bar); cheap, reads bytes only."""
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(0, lines - 1) if export_format(path) == "csv" else lines


Parsed = tuple[int, AgencyRecord | LineError]


def read_export(path: Path, mapping: ColumnMapping) -> Iterator[Parsed]:
    """Yield (line number, record or error) for every data row, in file order."""
    fmt = export_format(path)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read the export {path}: {exc.strerror}") from exc
    with handle:
        if fmt == "csv":
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            absent = [c for c in (mapping.columns[n] for n in REQUIRED_COLUMNS) if c not in header]
            if absent:
                raise ConfigError(f"{path}: the header lacks the mapped columns {absent}")
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error:
                    yield reader.line_num, LineError(reader.line_num, "line", "not valid CSV")
                    continue
                yield reader.line_num, _parsed(reader.line_num, row, mapping)
        else:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    yield number, LineError(number, "line", "not valid JSON")
                    continue
                if not isinstance(obj, dict):
                    yield number, LineError(number, "line", "not a JSON object")
                    continue
                yield number, _parsed(number, obj, mapping)


def _parsed(line: int, row: Mapping[str, Any], mapping: ColumnMapping) -> AgencyRecord | LineError:
    try:
        return parse_row(row, mapping)
    except ValidationError as exc:
        return LineError(line, exc.field, exc.rule)
