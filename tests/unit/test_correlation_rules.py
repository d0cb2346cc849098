"""Rules files: versioned by content, refused with a clear error naming the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from safehub.errors import ConfigError
from safehub.schemas.vocabulary import Sign, Vulnerability
from safehub.services.correlation.rules import (
    DEFAULT_RULES_PATH,
    load_rules,
    parse_rules,
    rules_by_version,
)

DEFAULT = DEFAULT_RULES_PATH.read_text()


def test_default_rules_cover_the_whole_vocabulary_and_are_versioned_by_content() -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    assert rules.version == hashlib.sha256(DEFAULT_RULES_PATH.read_bytes()).hexdigest()
    assert set(rules.sign_weights) == set(Sign)
    assert set(rules.vulnerability_weights) == set(Vulnerability)
    assert rules.distinct_signs_high == 3
    assert rules.sexual_activity_under_age == 13
    assert rules_by_version(rules.version) == rules


def test_a_comment_change_is_a_new_version() -> None:
    a = parse_rules(DEFAULT.encode())
    b = parse_rules((DEFAULT + "\n# reviewed\n").encode())
    assert a.version != b.version


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda t: t.replace("SELF_HARM = 2.0\n", ""), "sign_weights.SELF_HARM: missing"),
        (lambda t: t.replace("YOUNG_CARER = 0.5\n", "YOUNG_CARER = 0.5\nYOUNG_CARERS = 1\n"),
         "vulnerability_weights.YOUNG_CARERS: unknown key"),
        (lambda t: t.replace("escalating = 6.0", "escalating = 12.0"), "tiers: thresholds"),
        (lambda t: t.replace("factor = 1.5", 'factor = "high"'), "multi_agency.factor: must"),
        (lambda t: t.replace("PREGNANCY = 3.0", "PREGNANCY = -1"), "sign_weights.PREGNANCY"),
        (lambda t: t.replace("sign_days = 90", "sign_days = 90.5"), "windows.sign_days"),
        (lambda t: t.replace('"ABDUCTION",', '"ABDUCTED",'),
         "high_at_once.significant_incidents: unknown symbol ABDUCTED"),
        (lambda t: t.replace("HOMELESS = 1.0", "HOMELESS = 4.0"),
         "vulnerability_weights.HOMELESS: must be below tiers.emerging"),
        (lambda t: t.replace("format = 2", "format = 3"), "format: must be 1 or 2"),
        (lambda t: t + "\n[extras]\nx = 1\n", "extras: unknown section"),
        (lambda t: t.replace("[windows]", "[windows"), "not valid TOML"),
    ],
)
def test_invalid_rules_are_refused_naming_the_key(tmp_path: Path, edit, names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(edit(DEFAULT))
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert names in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_version_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no rules file"):
        rules_by_version("0" * 64)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "absent.toml")
