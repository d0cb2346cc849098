"""Agency exports: every sector's example reads cleanly; bad lines name line, field and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehub.errors import ConfigError
from safehub.producers.exports import (
    LineError,
    example_mapping,
    export_format,
    load_mapping,
    read_export,
)
from safehub.producers.records import MissingEpisodeRecord, SignRecord
from safehub.schemas.vocabulary import MissingType, Sector, Sign, SignificantIncident

EXAMPLES = Path(__file__).resolve().parents[2] / "producers" / "examples"


@pytest.mark.parametrize("sector", list(Sector))
def test_every_sector_has_a_clean_example(sector: Sector) -> None:
    mapping = load_mapping(example_mapping(sector))
    assert mapping.sector == sector
    (export,) = [p for p in EXAMPLES.glob(sector.value.lower() + ".*") if p.suffix != ".toml"]
    rows = list(read_export(export, mapping))
    assert rows and not [r for _, r in rows if isinstance(r, LineError)]


def test_police_example_fields() -> None:
    rows = dict(read_export(EXAMPLES / "police.csv", load_mapping(example_mapping(Sector.POLICE))))
    car, episode = rows[2], rows[3]
    assert isinstance(car, SignRecord)
    assert car.indicator is SignificantIncident.FOUND_IN_CAR_WITH_UNKNOWN_ADULTS
    # 02/03/2024 23:10 London time (GMT in March before the clocks change)
    assert car.occurred_at == 1_709_421_000_000 and car.person_ref == "N-55021"
    assert isinstance(episode, MissingEpisodeRecord)
    assert episode.missing_type is MissingType.MISSING
    assert episode.return_interview_offered and not episode.return_interview_done
    assert episode.ended_at is not None and episode.ended_at > episode.occurred_at


def test_bad_lines_are_reported_and_the_rest_still_read(tmp_path: Path) -> None:
    mapping = load_mapping(example_mapping(Sector.HEALTH))
    good = ('{"attendance_id": "A1", "given_name": "Poppy", "family_name": "Whitfield", '
            '"birth_date": "2011-05-01", "nhs_number": "9434765919", "la_code": "E08000035", '
            '"arrived_at": "2024-03-01T10:00:00Z", "safeguarding_code": "SH"}')
    export = tmp_path / "a.jsonl"
    export.write_text("\n".join([
        good,
        "{not json",
        good.replace('"2024-03-01T10:00:00Z"', '"yesterday"'),
        good.replace('"SH"', '"Fell off a wall"'),
        good.replace('"given_name": "Poppy", ', ""),
        "[1, 2]",
        good.replace("A1", "A2"),
    ]) + "\n")
    rows = list(read_export(export, mapping))
    errors = [r for _, r in rows if isinstance(r, LineError)]
    assert [str(e) for e in errors] == [
        "line 2: line: not valid JSON",
        "line 3: occurred_at: not a time in format ISO",
        "line 4: indicator: code not in the column mapping",
        "line 5: first_name: required",
        "line 6: line: not a JSON object",
    ]
    records = [r for _, r in rows if not isinstance(r, LineError)]
    assert [r.record_ref for r in records] == ["A1", "A2"]
    assert isinstance(records[0], SignRecord) and records[0].indicator is Sign.SELF_HARM
    assert "Poppy" not in repr(records[0])  # the identity is redacted in reprs


def test_mapping_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text('sector = "POLICE"\n[columns]\nrecord_ref = "x"\n')
    with pytest.raises(ConfigError, match="missing columns"):
        load_mapping(bad)
    bad.write_text(example_mapping(Sector.POLICE).read_text().replace('"OFFENDING"', '"NOPE"'))
    with pytest.raises(ConfigError, match="unknown symbol"):
        load_mapping(bad)
    with pytest.raises(ConfigError):
        export_format(tmp_path / "x.xlsx")


def test_csv_header_must_have_the_mapped_columns(tmp_path: Path) -> None:
    export = tmp_path / "e.csv"
    export.write_text("Forename,Surname\nA,B\n")
    with pytest.raises(ConfigError, match="header lacks"):
        list(read_export(export, load_mapping(example_mapping(Sector.POLICE))))
