"""The privacy canary's search (tests/e2e/identifiers.py) ignores names that turn up by chance
inside machine-made random tokens, and still finds them anywhere else."""

from tests.e2e.identifiers import (
    FIRST_NAME,
    NHS_NUMBER,
    RECORD_REF,
    SURNAME,
    Identifier,
    Search,
)

SEARCH = Search({Identifier(FIRST_NAME, "Aa"), Identifier(SURNAME, "Ai"),
                 Identifier(NHS_NUMBER, "9434765919")})


def forms_found(text: str) -> set[str]:
    return {hit.form for hit in SEARCH.in_text(text)} | {
        hit.form for hit in SEARCH.in_bytes(text.encode())}


def test_a_short_name_inside_a_generated_password_is_chance() -> None:
    # The demo's password (18 hex digits) as CI once generated it.
    assert forms_found("account <agency>-demo, password 52aa3c3aef610ecaed\n") == set()


def test_a_short_name_inside_a_url_safe_secret_is_chance() -> None:
    # The key service's operator secret (secrets.token_urlsafe(32)): its last 36 characters as
    # CI once generated them.
    assert forms_found("HJsYbfu42p_LCKP7VRjHD0Xixsw242QvaAGr-ai6O0s\n") == set()


def test_a_record_reference_packed_beside_a_handle_in_bytes_is_found() -> None:
    # How a database file holds two fields side by side: one run of URL-safe characters.
    search = Search({Identifier(RECORD_REF, "PNY-0000003")})
    packed = b"\x00\x17PNY-0000003QvaAGrXixsw242LCKP7VRjHD0\x00"
    assert {hit.form for hit in search.in_bytes(packed)} == {"PNY-0000003"}


def test_the_same_name_and_numbers_outside_random_tokens_are_found() -> None:
    assert forms_found("child Aa seen at 14:02") == {"Aa"}
    assert forms_found("password 52-aa-3c") == {"aa"}  # short, but a whole word here
    assert forms_found("nhs=9434765919;") == {"9434765919"}
    # Not random: one case only, or no digits, however long the run.
    assert forms_found("subject-ai-9434765919-seen-at-the-station-today") >= {"ai", "9434765919"}
    assert forms_found("Subject_Ai_seen_at_the_station_today_by_patrol") == {"Ai"}
    # A run of digits alone is never taken for a random token below 32 digits.
    assert "9434765919" in forms_found("x 9434765919 20100314 y")


def test_a_short_name_inside_a_signature_is_chance() -> None:
    # An audit checkpoint's signature as CI once wrote it: padded base64 whose last four
    # characters are "/AA=" ...
    assert forms_found("safehub 9yJ1qAbcK0Lm3Np7QrStUvWxYz2wEe8Bn4Gh6Kk5Mm1Pp0Rr/AA=\n") == set()
    # ... and unpadded standard base64 with "+" and "/" in it.
    assert forms_found("sig Qm9vK3ZpZGVv+aa/Zk9yX2JhcjEyMzQ1Njc4OTBhYmNkZWZnaGlq\n") == set()
