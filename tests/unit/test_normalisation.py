"""Normalisation: two agencies' spellings of one identity must become the same bytes."""

from __future__ import annotations

from datetime import date

import pytest

from safehub.errors import ValidationError
from safehub.producers import normalisation as norm


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Chloë", "CHLOE"),
        ("O'Brien-Walsh", "OBRIENWALSH"),
        ("o brien walsh", "OBRIENWALSH"),
        ("  José  María ", "JOSEMARIA"),
        ("\uff2a\uff41\uff4d\uff45\uff53", "JAMES"),  # full-width forms fold through NFKD
        ("Zoë-Ann", "ZOEANN"),
    ],
)
def test_names_fold_to_one_form(raw: str, expected: str) -> None:
    assert norm.name(raw, "first_name") == expected


def test_name_without_letters_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as err:
        norm.name("--- 42 ---", "surname")
    assert err.value.field == "surname"
    assert "42" not in str(err.value)
    with pytest.raises(ValidationError, match="first_name: no letters"):
        norm.name("中文", "first_name")


@pytest.mark.parametrize("raw", ["9434765919", "943 476 5919", "943-476-5919", " 9434765919 "])
def test_valid_nhs_number_in_any_spacing(raw: str) -> None:
    assert norm.nhs_number(raw) == "9434765919"


def test_nhs_number_check_digit() -> None:
    with pytest.raises(ValidationError) as err:
        norm.nhs_number("9434765918")
    assert err.value.rule == "mod-11 check digit does not match"
    assert "9434765918" not in str(err.value)
    with pytest.raises(ValidationError, match="must be 10 digits"):
        norm.nhs_number("94347659")
    # remainder 1 -> check value 10: such numbers are never issued
    with pytest.raises(ValidationError, match="mod-11"):
        norm.nhs_number("1000000010")
    assert norm.nhs_number("") is None
    assert norm.nhs_number(None) is None


def test_dates_in_declared_formats() -> None:
    assert norm.calendar_date("2009-03-14", "date_of_birth") == date(2009, 3, 14)
    assert norm.calendar_date("14/03/2009", "date_of_birth", "DD/MM/YYYY") == date(2009, 3, 14)
    assert norm.calendar_date("20090314", "date_of_birth", "YYYYMMDD") == date(2009, 3, 14)
    with pytest.raises(ValidationError) as err:
        norm.calendar_date("31/02/2009", "date_of_birth", "DD/MM/YYYY")
    assert "31/02" not in str(err.value) and err.value.field == "date_of_birth"


@pytest.mark.parametrize(("raw", "expected"),
                         [("LS9 8AB", "LS98AB"), ("ls98ab", "LS98AB"), ("SW1A 1AA", "SW1A1AA"),
                          ("m1 1ae", "M11AE")])
def test_postcodes(raw: str, expected: str) -> None:
    assert norm.postcode(raw) == expected


def test_bad_postcode_named_not_quoted() -> None:
    with pytest.raises(ValidationError) as err:
        norm.postcode("12 Acacia Avenue")
    assert err.value.field == "postcode" and "Acacia" not in str(err.value)


def test_local_authority_codes() -> None:
    assert norm.local_authority(" e08000035 ", "local_authority") == "E08000035"
    with pytest.raises(ValidationError):
        norm.local_authority("E05000035", "local_authority")  # a ward, not an authority


def test_age_on_event_date() -> None:
    born = date(2009, 3, 14)
    assert norm.age_in_years(born, date(2024, 3, 13)) == 14
    assert norm.age_in_years(born, date(2024, 3, 14)) == 15
    leap = date(2008, 2, 29)
    assert norm.age_in_years(leap, date(2024, 2, 28)) == 15
    assert norm.age_in_years(leap, date(2023, 3, 1)) == 15


def test_identity_repr_hides_identifiers() -> None:
    ident = norm.NormalisedIdentity("CHLOE", "WALSH", date(2009, 3, 14), "9434765919", "LS98AB")
    assert "CHLOE" not in repr(ident) and "9434765919" not in f"{ident}"
