"""Rules files: versioned by content, refused with a clear error naming the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from safehub.errors import ConfigError
from safehub.schemas.vocabulary import Sign, Vulnerability
from safehub.services.correlation.rules import (
    DEFAULT_RULES_PATH,
    RULES_DIR,
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
        (lambda t: t.replace("PREGNANCY = 3.0\n", ""), "sign_weights.PREGNANCY: missing"),
        (lambda t: t.replace("YOUNG_CARER = 0.5\n", "YOUNG_CARER = 0.5\nYOUNG_CARERS = 1\n"),
         "vulnerability_weights.YOUNG_CARERS: unknown key"),
        (lambda t: t.replace("escalating = 6.0", "escalating = 12.0"), "tiers: thresholds"),
        (lambda t: t.replace("factor = 1.5", 'factor = "high"'), "multi_agency.factor: must"),
        (lambda t: t.replace("TERMINATION = 3.0", "TERMINATION = -1"), "sign_weights.TERMINATION"),
        (lambda t: t.replace("sign_days = 90", "sign_days = 90.5"), "windows.sign_days"),
        (lambda t: t.replace('"ABDUCTION",', '"ABDUCTED",'),
         "high_at_once.significant_incidents: unknown symbol ABDUCTED"),
        (lambda t: t.replace("HOMELESS = 1.0", "HOMELESS = 4.0"),
         "vulnerability_weights.HOMELESS: must be below tiers.emerging"),
        (lambda t: t.replace("format = 3", "format = 4"), "format: must be 1, 2 or 3"),
        (lambda t: t.replace("distinct_sign_min_weight = 1.5", ""),
         "high_at_once.distinct_sign_min_weight: missing"),
        (lambda t: t.replace("format = 3", "format = 2"),
         "high_at_once.distinct_sign_min_weight: unknown key"),
        (lambda t: t.replace("distinct_sign_min_weight = 1.5", "distinct_sign_min_weight = -1"),
         "high_at_once.distinct_sign_min_weight: must be at least"),
        (lambda t: t + "\n[extras]\nx = 1\n", "extras: unknown section"),
        (lambda t: t.rsplit("\n[missing_episodes]", 1)[0], "missing_episodes: missing section"),
        (lambda t: t.replace("absent_weight = 1.0", "absent_weight = 2.5"),
         "missing_episodes.absent_weight: must not exceed missing_weight"),
        (lambda t: t.replace("no_interview_weight = 1.0", "no_interview_weight = 1.5"),
         "missing_episodes: missing_weight + long_weight + no_interview_weight must be below"),
        (lambda t: t.replace('pattern_tier = "ESCALATING"', 'pattern_tier = "URGENT"'),
         "missing_episodes.pattern_tier: must be EMERGING, ESCALATING or HIGH"),
        (lambda t: t.replace("absent_is_sign = false", "absent_is_sign = 0"),
         "missing_episodes.absent_is_sign: must be true or false"),
        (lambda t: t.replace("pattern_days = 90", "pattern_days = 0"),
         "missing_episodes.pattern_days: must be at least 1"),
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


def test_version_1_rules_still_load_for_replay_and_have_no_episode_rules() -> None:
    v1 = load_rules(RULES_DIR / "default-v1.toml")
    v2 = load_rules(DEFAULT_RULES_PATH)
    assert v1.episodes is None and v2.episodes is not None
    assert rules_by_version(v1.version) == v1 and rules_by_version(v2.version) == v2
    # A format 1 file may not have the section, so it is not silently ignored.
    with pytest.raises(ConfigError, match="missing_episodes: unknown section"):
        parse_rules((RULES_DIR / "default-v1.toml").read_bytes()
                    + b"\n[missing_episodes]\nmissing_weight = 2.0\n")


def test_the_default_episode_rules_read_as_the_guidance_says() -> None:
    ep = load_rules(DEFAULT_RULES_PATH).episodes
    assert ep is not None
    assert ep.missing_weight > ep.absent_weight
    assert ep.interview_ms == 72 * 3_600_000  # a return home interview within 72 hours
    assert (ep.pattern_episodes, ep.pattern_ms // 86_400_000) == (3, 90)


def test_version_3_counts_only_signs_of_some_weight_as_distinct() -> None:
    v2, v3 = load_rules(RULES_DIR / "default-v2.toml"), load_rules(DEFAULT_RULES_PATH)
    assert v2.distinct_sign_min_weight == 0.0
    assert all(v2.by_indicator[s].sign for s in Sign)
    assert v3.distinct_sign_min_weight == 1.5
    light = {s for s in Sign if not v3.by_indicator[s].sign}
    assert light == {s for s in Sign if v3.sign_weights[s] < 1.5}
    assert Sign.ABSENT_FROM_SCHOOL in light and Sign.REPEAT_STI not in light
    # A missing episode is the sign by the episode rules, whatever this weight says.
    assert Sign.MISSING_FROM_HOME_OR_CARE not in light
    assert rules_by_version(v3.version) == v3
