"""RFC 9497 OPRF (ristretto255-SHA512) through the pure functions: the RFC's own vectors,
element validation, and the key service's pure parts (key files, quota accounting)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safehub.errors import ValidationError
from safehub.services.keyservice import oprf

VECTORS = json.loads((Path(__file__).parent / "rfc9497_vectors.json").read_text())
SEED = bytes.fromhex(VECTORS["Seed"])
INFO = bytes.fromhex(VECTORS["KeyInfo"])


def test_derive_key_pair_gives_the_rfc_secret_key() -> None:
    sk, pk = oprf.derive_key_pair(SEED, INFO)
    assert sk.hex() == VECTORS["skSm"]
    assert len(pk) == 32 and oprf.deserialize_element(pk) == pk


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_rfc_vectors(vector: dict[str, str]) -> None:
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    data = bytes.fromhex(vector["Input"])
    blind, blinded = oprf.blind(data, bytes.fromhex(vector["Blind"]))
    assert blinded.hex() == vector["BlindedElement"]
    evaluated = oprf.blind_evaluate(sk, blinded)
    assert evaluated.hex() == vector["EvaluationElement"]
    output = oprf.finalize(data, blind, evaluated)
    assert output.hex() == vector["Output"]
    assert oprf.evaluate(sk, data) == output


def test_random_blinds_give_the_same_output() -> None:
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    data = b"MK2|JANE|DOE|2012-03-04"
    outputs = set()
    blinded_seen = set()
    for _ in range(3):
        blind, blinded = oprf.blind(data)
        blinded_seen.add(blinded)
        outputs.add(oprf.finalize(data, blind, oprf.blind_evaluate(sk, blinded)))
    assert len(outputs) == 1 and len(blinded_seen) == 3  # the server sees unlinkable elements


def test_other_key_other_output() -> None:
    sk1, _ = oprf.derive_key_pair(SEED, INFO)
    sk2, _ = oprf.derive_key_pair(SEED, b"another key")
    assert oprf.evaluate(sk1, b"x") != oprf.evaluate(sk2, b"x")


def test_expand_message_xmd_rfc9380_vector() -> None:
    # RFC 9380 appendix K.3 (expand_message_xmd(SHA-512)), msg "", len_in_bytes 0x20.
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert oprf.expand_message_xmd(b"", dst, 0x20).hex() == (
        "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
    )


INVALID = {
    "short": bytes(31),
    "long": bytes(33),
    "identity": bytes(32),
    "all ones (non-canonical)": b"\xff" * 32,
    "negative field element": b"\x01" + bytes(31),
    "high bit set": bytes(31) + b"\x80",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_elements_are_refused(name: str) -> None:
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    with pytest.raises(ValidationError) as info:
        oprf.blind_evaluate(sk, INVALID[name])
    assert info.value.field == "blindedElement"
    with pytest.raises(ValidationError):
        oprf.finalize(b"x", oprf.random_scalar(), INVALID[name])


def test_identity_error_is_clear() -> None:
    with pytest.raises(ValidationError, match="identity"):
        oprf.deserialize_element(bytes(32), "elements[3]")


def test_bad_blinds_and_inputs() -> None:
    with pytest.raises(ValidationError, match="zero"):
        oprf.blind(b"x", bytes(32))
    with pytest.raises(ValidationError, match="canonical"):
        oprf.blind(b"x", b"\xff" * 32)
    with pytest.raises(ValidationError, match="65535"):
        oprf.blind(b"x" * 65536)
    with pytest.raises(ValidationError, match="32 bytes"):
        oprf.derive_key_pair(bytes(31), b"")


def test_a_valid_element_with_the_top_bit_set_is_refused() -> None:
    # libsodium 1.0.18 decodes it as the same element; RFC 9497 demands canonical encodings.
    sk, pk = oprf.derive_key_pair(SEED, INFO)
    twin = pk[:-1] + bytes([pk[-1] | 0x80])
    with pytest.raises(ValidationError, match="canonical"):
        oprf.blind_evaluate(sk, twin)
